// Receive coalescing: consecutive plain TCP segments of one flow become one
// merged segment with correct headers and checksums; anything else passes
// through untouched and in order. The frames are built here, with their
// own checksum code, so the module's is checked against an independent one.
import { describe, expect, it } from "vitest";
import { Coalescer, MAX_COALESCED, MAX_SEGMENTS } from "../../../dist/bridge/virtio-net/coalesce.js";
import { bytes, concat, csum, ETH, segment, type SegOpts } from "./segments.js";

/** Both checksums of an output frame hold, and its lengths agree. */
function check(f: Uint8Array): { payload: Uint8Array; flags: number; window: number } {
  const dv = new DataView(f.buffer, f.byteOffset, f.length);
  const total = dv.getUint16(ETH + 2);
  expect(ETH + total).toBeLessThanOrEqual(f.length);
  expect(csum(f, ETH, ETH + 20)).toBe(0xffff);
  const t = ETH + 20;
  const pseudo = csum(f, ETH + 12, ETH + 20) + 6 + total - 20;
  expect(csum(f, t, ETH + total, pseudo)).toBe(0xffff);
  return { payload: f.slice(t + 20, ETH + total), flags: f[t + 13]!, window: dv.getUint16(t + 14) };
}

function run(frames: Uint8Array[]) {
  const out: Array<{ frame: Uint8Array; gso: number; checked: boolean }> = [];
  const c = new Coalescer((frame, gso, checked) => out.push({ frame: frame.slice(), gso, checked }));
  for (const f of frames) c.push(f);
  c.flush();
  return { out, stats: c.stats };
}

describe("Coalescer", () => {
  it("merges consecutive segments of one flow into one, with right lengths, checksums, latest window and the MSS", () => {
    const parts = [0, 1, 2, 3].map((i) => bytes(1460, i + 1));
    const frames = parts.map((p, i) => segment({ seq: 1000 + 1460 * i, payload: p, window: 60000 - i }));
    const { out, stats } = run(frames);
    expect(out).toHaveLength(1);
    expect(out[0]!.gso).toBe(1460);
    expect(out[0]!.checked).toBe(true);
    const got = check(out[0]!.frame);
    expect(got.payload).toEqual(concat(parts));
    expect(got.window).toBe(60000 - 3);
    expect(stats).toEqual({ merged: 1, segments: 4 });
  });

  it("passes a lone segment on as it came, marked checked, without GSO", () => {
    const f = segment({ seq: 5, payload: bytes(100, 9) });
    const { out, stats } = run([f]);
    expect(out).toEqual([{ frame: f, gso: 0, checked: true }]);
    expect(stats).toEqual({ merged: 0, segments: 0 });
  });

  it("keeps apart what is not one run: a gap, another flow, another ACK, another TTL", () => {
    const p = bytes(1000, 3);
    const cases: Array<[string, Partial<SegOpts>]> = [
      ["gap", { seq: 1000 + 1001 }],
      ["port", { seq: 2000, dport: 40001 }],
      ["ack", { seq: 2000, ack: 778 }],
      ["ttl", { seq: 2000, ttl: 63 }],
    ];
    for (const [, second] of cases) {
      const { out } = run([segment({ seq: 1000, payload: p }), segment({ payload: p, ...second } as SegOpts)]);
      expect(out.map((o) => o.gso)).toEqual([0, 0]);
    }
  });

  it("lets every other frame through untouched, unchecked, in order, after what it held", () => {
    const p = bytes(500, 4);
    const odd: Uint8Array[] = [
      new Uint8Array(60).fill(0xaa), // not IPv4 at all
      segment({ seq: 1500, payload: p, flags: 0x12 }), // SYN-ACK
      segment({ seq: 1500, payload: p, flags: 0x11 }), // FIN
      segment({ seq: 1500, payload: p, flags: 0x14 }), // RST
      segment({ seq: 1500, payload: p, flags: 0x30 }), // URG
      segment({ seq: 1500, payload: p, tcpWords: 6 }), // TCP options
      segment({ seq: 1500, payload: p, ihl: 6 }), // IP options
      segment({ seq: 1500, payload: p, fragment: 0x2000 }), // more fragments
      segment({ seq: 1500, payload: p, fragment: 0x0001 }), // a fragment offset
      segment({ seq: 1500, payload: p, badIpSum: true }),
      segment({ seq: 1500, payload: p, badTcpSum: true }),
      segment({ seq: 1500, payload: p, proto: 17 }),
      segment({ seq: 1500, payload: new Uint8Array(0) }), // a bare ACK
    ];
    for (const f of odd) {
      const a = segment({ seq: 500, payload: p });
      const b = segment({ seq: 1000, payload: p });
      const c = segment({ seq: 1500, payload: p });
      const { out } = run([a, b, f, c]);
      expect(out).toHaveLength(3);
      expect(out[0]!.gso).toBe(500);
      expect(out[1]).toEqual({ frame: f, gso: 0, checked: false });
      expect(out[2]).toEqual({ frame: c, gso: 0, checked: true });
    }
  });

  it("ends a run at a PSH segment (which it keeps, flag and all) and at a short one; never takes a longer one", () => {
    const p = bytes(1000, 5);
    const psh = run([segment({ seq: 0, payload: p }), segment({ seq: 1000, payload: p, flags: 0x18 }), segment({ seq: 2000, payload: p })]);
    expect(psh.out.map((o) => o.gso)).toEqual([1000, 0]);
    expect(check(psh.out[0]!.frame).flags).toBe(0x18);
    const short = run([segment({ seq: 0, payload: p }), segment({ seq: 1000, payload: p.subarray(0, 10) }), segment({ seq: 1010, payload: p })]);
    expect(short.out.map((o) => o.gso)).toEqual([1000, 0]);
    const longer = run([segment({ seq: 0, payload: p.subarray(0, 10) }), segment({ seq: 10, payload: p })]);
    expect(longer.out.map((o) => o.gso)).toEqual([0, 0]);
  });

  it("never builds a datagram over 64 KiB, and loses no byte across the cuts", () => {
    // Jumbo segments, so that the byte bound, not the segment count, cuts.
    const parts = Array.from({ length: 30 }, (_, i) => bytes(9000, 100 + i));
    const { out } = run(parts.map((p, i) => segment({ seq: 0xfffff000 + 9000 * i, payload: p }))); // the sequence wraps, too
    expect(out.length).toBeGreaterThan(4);
    for (const o of out) expect(o.frame.length).toBeLessThanOrEqual(MAX_COALESCED);
    expect(Math.max(...out.map((o) => o.frame.length))).toBeGreaterThan(MAX_COALESCED - 9000);
    expect(concat(out.map((o) => check(o.frame).payload))).toEqual(concat(parts));
  });

  it("merges at most MAX_SEGMENTS segments into one, so the guest acknowledges often enough", () => {
    const parts = Array.from({ length: 2 * MAX_SEGMENTS + 8 }, (_, i) => bytes(1460, 200 + i));
    const { out } = run(parts.map((p, i) => segment({ seq: 1000 + 1460 * i, payload: p })));
    expect(out.map((o) => check(o.frame).payload.length / 1460)).toEqual([MAX_SEGMENTS, MAX_SEGMENTS, 8]);
    expect(concat(out.map((o) => check(o.frame).payload))).toEqual(concat(parts));
  });

  it("gets the checksum right when an odd MSS puts payloads at odd offsets", () => {
    const parts = [0, 1, 2].map((i) => bytes(1001, 50 + i));
    const { out } = run(parts.map((p, i) => segment({ seq: 7 + 1001 * i, payload: p })));
    expect(out).toHaveLength(1);
    expect(check(out[0]!.frame).payload).toEqual(concat(parts));
  });

  it("drops the Ethernet padding of a short first frame when it merges", () => {
    const parts = [bytes(3, 1), bytes(3, 2)];
    const { out } = run(parts.map((p, i) => segment({ seq: 3 * i, payload: p, pad: 4 })));
    expect(out).toHaveLength(1);
    expect(out[0]!.frame.length).toBe(ETH + 40 + 6);
    expect(check(out[0]!.frame).payload).toEqual(concat(parts));
  });
});
