// IPv4/TCP segments in Ethernet frames for the virtio-net tests, with their
// own checksum code (independent of the module under test).

export const ETH = 14;

export function csum(b: Uint8Array, start: number, end: number, init = 0): number {
  let s = init;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) + (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

export interface SegOpts {
  seq: number;
  payload: Uint8Array;
  flags?: number;
  ack?: number;
  sport?: number;
  dport?: number;
  window?: number;
  ttl?: number;
  fragment?: number;
  ihl?: number;
  tcpWords?: number;
  pad?: number;
  badIpSum?: boolean;
  badTcpSum?: boolean;
  proto?: number;
}

/** An Ethernet frame carrying one IPv4/TCP segment with right checksums (unless asked otherwise). */
export function segment(o: SegOpts): Uint8Array {
  const ipLen = (o.ihl ?? 5) * 4;
  const tcpLen = (o.tcpWords ?? 5) * 4;
  const total = ipLen + tcpLen + o.payload.length;
  const f = new Uint8Array(Math.max(ETH + total, 60) + (o.pad ?? 0));
  const dv = new DataView(f.buffer);
  f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2], 0);
  dv.setUint16(12, 0x0800);
  f[ETH] = 0x40 | (o.ihl ?? 5);
  dv.setUint16(ETH + 2, total);
  dv.setUint16(ETH + 4, 0x1234);
  dv.setUint16(ETH + 6, o.fragment ?? 0x4000);
  f[ETH + 8] = o.ttl ?? 64;
  f[ETH + 9] = o.proto ?? 6;
  f.set([10, 0, 2, 2, 10, 0, 2, 15], ETH + 12);
  dv.setUint16(ETH + 10, ~csum(f, ETH, ETH + ipLen) & 0xffff ^ (o.badIpSum ? 1 : 0));
  const t = ETH + ipLen;
  dv.setUint16(t, o.sport ?? 8080);
  dv.setUint16(t + 2, o.dport ?? 40000);
  dv.setUint32(t + 4, o.seq >>> 0);
  dv.setUint32(t + 8, o.ack ?? 777);
  f[t + 12] = (o.tcpWords ?? 5) << 4;
  f[t + 13] = o.flags ?? 0x10;
  dv.setUint16(t + 14, o.window ?? 65535);
  f.set(o.payload, t + tcpLen);
  const pseudo = csum(f, ETH + 12, ETH + 20) + 6 + tcpLen + o.payload.length;
  dv.setUint16(t + 16, ~csum(f, t, t + tcpLen + o.payload.length, pseudo) & 0xffff ^ (o.badTcpSum ? 1 : 0));
  return f;
}

export { seededBytes as bytes } from "../seeded-bytes.js";

export const concat = (parts: Uint8Array[]) => {
  const r = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) r.set(p, (at += p.length) - p.length);
  return r;
};

