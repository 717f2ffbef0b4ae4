// Raw Ethernet frames for talking to the wire by hand: builders, a parser
// that checks checksums, and a client for the length-prefixed stream.
import { connect, type Socket } from "node:net";

export const GUEST_MAC = "52:54:00:12:34:56";
export const GUEST_IP = "10.0.2.15";
export const GATEWAY_IP = "10.0.2.2";
/** slirp's MAC for its own addresses: 52:55 and then the IPv4 address. */
export const GATEWAY_MAC = "52:55:0a:00:02:02";
export const BROADCAST_MAC = "ff:ff:ff:ff:ff:ff";

export const ETH_IP = 0x0800;
export const ETH_ARP = 0x0806;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const TH = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

const mac = (s: string) => Buffer.from(s.split(":").map((x) => parseInt(x, 16)));
const ip4 = (s: string) => Buffer.from(s.split(".").map(Number));
export const macStr = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
export const ipStr = (b: Buffer) => [...b].join(".");

/** The Internet checksum (RFC 1071) over the concatenated parts. */
export function checksum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export function eth(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

export function ipv4(src: string, dst: string, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(Math.floor(Math.random() * 0x10000), 4);
  h[8] = 64;
  h[9] = proto;
  ip4(src).copy(h, 12);
  ip4(dst).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, payload]);
}

function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  const p = Buffer.alloc(12);
  ip4(src).copy(p, 0);
  ip4(dst).copy(p, 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  return p;
}

export interface TcpOut {
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  /** TCP options, already padded to a multiple of 4 bytes. */
  options?: Buffer;
  payload?: Buffer;
}

/** The window-scale option (RFC 7323) with a no-op in front, 4 bytes. */
export const windowScaleOption = (shift: number) => Buffer.from([1, 3, 3, shift]);

/** A whole frame from the guest to DST carrying one TCP segment. */
export function tcpFrame(dst: string, t: TcpOut): Buffer {
  const options = t.options ?? Buffer.alloc(0);
  const h = Buffer.alloc(20 + options.length);
  h.writeUInt16BE(t.sport, 0);
  h.writeUInt16BE(t.dport, 2);
  h.writeUInt32BE(t.seq >>> 0, 4);
  h.writeUInt32BE((t.ack ?? 0) >>> 0, 8);
  h[12] = (5 + options.length / 4) << 4;
  options.copy(h, 20);
  h[13] = t.flags;
  h.writeUInt16BE(t.window ?? 65535, 14);
  const seg = Buffer.concat([h, t.payload ?? Buffer.alloc(0)]);
  seg.writeUInt16BE(checksum(pseudo(GUEST_IP, dst, PROTO_TCP, seg.length), seg), 16);
  return eth(GATEWAY_MAC, GUEST_MAC, ETH_IP, ipv4(GUEST_IP, dst, PROTO_TCP, seg));
}

export function udpFrame(dstMac: string, src: string, dst: string, sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  const dgram = Buffer.concat([h, payload]);
  dgram.writeUInt16BE(checksum(pseudo(src, dst, PROTO_UDP, dgram.length), dgram) || 0xffff, 6);
  return eth(dstMac, GUEST_MAC, ETH_IP, ipv4(src, dst, PROTO_UDP, dgram));
}

export function arpFrame(op: 1 | 2, dstMac: string, senderMac: string, senderIp: string, targetMac: string, targetIp: string): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0); // Ethernet
  a.writeUInt16BE(ETH_IP, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(op, 6);
  mac(senderMac).copy(a, 8);
  ip4(senderIp).copy(a, 14);
  mac(targetMac).copy(a, 18);
  ip4(targetIp).copy(a, 24);
  return eth(dstMac, senderMac, ETH_ARP, a);
}

export const arpWhoHas = (ip: string) => arpFrame(1, BROADCAST_MAC, GUEST_MAC, GUEST_IP, "00:00:00:00:00:00", ip);

export function icmpEchoFrame(dst: string, id: number, seq: number, data: Buffer): Buffer {
  const m = Buffer.concat([Buffer.from([8, 0, 0, 0, id >> 8, id & 255, seq >> 8, seq & 255]), data]);
  m.writeUInt16BE(checksum(m), 2);
  return eth(GATEWAY_MAC, GUEST_MAC, ETH_IP, ipv4(GUEST_IP, GATEWAY_IP, PROTO_ICMP, m));
}

/** A DHCP DISCOVER, broadcast or (as renewals are) sent to the server. */
export function dhcpDiscoverFrame(xid: number, server?: string): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 1; // BOOTREQUEST
  b[1] = 1; // Ethernet
  b[2] = 6;
  b.writeUInt32BE(xid, 4);
  b.writeUInt16BE(0x8000, 10); // broadcast reply
  mac(GUEST_MAC).copy(b, 28);
  b.writeUInt32BE(0x63825363, 236); // magic cookie
  const opts = Buffer.from([53, 1, 1, 55, 3, 1, 3, 6, 255]); // DISCOVER; wants mask, router, DNS
  const payload = Buffer.concat([b, opts]);
  if (server) return udpFrame(GATEWAY_MAC, GUEST_IP, server, 68, 67, payload);
  return udpFrame(BROADCAST_MAC, "0.0.0.0", "255.255.255.255", 68, 67, payload);
}

export interface Parsed {
  raw: Buffer;
  dst: string;
  src: string;
  type: number;
  arp?: { op: number; senderMac: string; senderIp: string; targetMac: string; targetIp: string };
  ip?: { src: string; dst: string; proto: number; checksumOk: boolean; payload: Buffer };
  tcp?: { sport: number; dport: number; seq: number; ack: number; flags: number; window: number; windowScale?: number; checksumOk: boolean; payload: Buffer };
  udp?: { sport: number; dport: number; payload: Buffer };
  icmp?: { type: number; code: number; id: number; seq: number; payload: Buffer };
}

export function parse(f: Buffer): Parsed {
  const p: Parsed = { raw: f, dst: macStr(f.subarray(0, 6)), src: macStr(f.subarray(6, 12)), type: f.readUInt16BE(12) };
  const body = f.subarray(14);
  if (p.type === ETH_ARP && body.length >= 28) {
    p.arp = {
      op: body.readUInt16BE(6),
      senderMac: macStr(body.subarray(8, 14)),
      senderIp: ipStr(body.subarray(14, 18)),
      targetMac: macStr(body.subarray(18, 24)),
      targetIp: ipStr(body.subarray(24, 28)),
    };
  }
  if (p.type !== ETH_IP || body.length < 20 || body[0] >> 4 !== 4) return p;
  const ihl = (body[0] & 15) * 4;
  const ipHdr = body.subarray(0, ihl);
  const payload = body.subarray(ihl, body.readUInt16BE(2)); // Ethernet pads short frames
  p.ip = { src: ipStr(ipHdr.subarray(12, 16)), dst: ipStr(ipHdr.subarray(16, 20)), proto: body[9], checksumOk: checksum(ipHdr) === 0, payload };
  if (p.ip.proto === PROTO_TCP && payload.length >= 20) {
    const off = (payload[12] >> 4) * 4;
    p.tcp = {
      sport: payload.readUInt16BE(0),
      dport: payload.readUInt16BE(2),
      seq: payload.readUInt32BE(4),
      ack: payload.readUInt32BE(8),
      flags: payload[13],
      window: payload.readUInt16BE(14),
      windowScale: windowScaleIn(payload.subarray(20, off)),
      checksumOk: checksum(pseudo(p.ip.src, p.ip.dst, PROTO_TCP, payload.length), payload) === 0,
      payload: payload.subarray(off),
    };
  } else if (p.ip.proto === PROTO_UDP && payload.length >= 8) {
    p.udp = { sport: payload.readUInt16BE(0), dport: payload.readUInt16BE(2), payload: payload.subarray(8) };
  } else if (p.ip.proto === PROTO_ICMP && payload.length >= 8) {
    p.icmp = { type: payload[0], code: payload[1], id: payload.readUInt16BE(4), seq: payload.readUInt16BE(6), payload: payload.subarray(8) };
  }
  return p;
}

/** The shift of a window-scale option among TCP options, if there is one. */
function windowScaleIn(options: Buffer): number | undefined {
  for (let i = 0; i < options.length; ) {
    const kind = options[i];
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = options[i + 1] ?? 0;
    if (len < 2) break;
    if (kind === 3 && len === 3) return options[i + 2];
    i += len;
  }
  return undefined;
}

/** DHCP options of a BOOTP payload, by code. */
export function dhcpOptions(bootp: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let i = 240; i < bootp.length && bootp[i] !== 255; ) {
    if (bootp[i] === 0) {
      i++;
      continue;
    }
    out.set(bootp[i], bootp.subarray(i + 2, i + 2 + bootp[i + 1]));
    i += 2 + bootp[i + 1];
  }
  return out;
}

export const lengthPrefix = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/**
 * The guest's NIC on the wire: sends frames, collects what comes back, and
 * answers slirp's ARP requests for the guest's address as a guest would.
 */
export class WireClient {
  readonly received: Parsed[] = [];
  /** Every frame that arrived whole, ARP requests answered here included. */
  framesSeen = 0;
  /** Stream errors: a frame length the wire must never send. */
  readonly errors: string[] = [];
  readonly closed: Promise<void>;
  private pending = Buffer.alloc(0);
  private waiters = new Set<() => void>();

  private constructor(readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) => socket.on("close", () => resolve()));
    socket.on("error", () => {});
  }

  static connect(path: string): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new WireClient(s)));
      s.once("error", reject);
    });
  }

  send(frame: Buffer): void {
    this.socket.write(Buffer.concat([lengthPrefix(frame.length), frame]));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The first received frame that matches (taken off the list), or a timeout error. */
  async next(what: string, match: (p: Parsed) => boolean, timeoutMs = 2000): Promise<Parsed> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.findIndex(match);
      if (i >= 0) return this.received.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms (got ${this.received.length} other frames)`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.waiters.delete(wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  /** Plugs in as a guest does: ARP for the gateway, so slirp also learns our MAC. */
  async announce(): Promise<void> {
    this.send(arpWhoHas(GATEWAY_IP));
    await this.next("ARP reply from the gateway", (p) => p.arp?.op === 2 && p.arp.senderIp === GATEWAY_IP);
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (len < 14 || len > 1514) {
        this.errors.push(`frame length ${len} from the wire`);
        this.socket.destroy();
        return;
      }
      if (this.pending.length < 4 + len) break;
      const p = parse(Buffer.from(this.pending.subarray(4, 4 + len)));
      this.pending = this.pending.subarray(4 + len);
      this.framesSeen++;
      if (p.arp?.op === 1 && p.arp.targetIp === GUEST_IP) {
        this.send(arpFrame(2, p.arp.senderMac, GUEST_MAC, GUEST_IP, p.arp.senderMac, p.arp.senderIp));
        continue;
      }
      this.received.push(p);
    }
    for (const wake of [...this.waiters]) wake();
  }
}
