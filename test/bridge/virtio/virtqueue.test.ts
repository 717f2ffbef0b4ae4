// The split virtqueue against a plain RAM: chains a real driver builds are
// read as it meant them, and every way a hostile driver can break the ring
// gives a faulted chain (or nothing) without a byte outside its own buffers
// being read or written.
import { describe, expect, it } from "vitest";
import { popChain, pushUsed, type GuestRam, type QueueRegisters } from "../../../dist/bridge/virtio/virtqueue.js";

const RAM = 1 << 20;
const SIZE = 8;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;

interface Desc {
  addr: number;
  len: number;
  flags: number;
  next?: number;
  high?: number;
}

function setup() {
  const mem = new Uint8Array(RAM);
  const view = new DataView(mem.buffer);
  const dirty: Array<[number, number]> = [];
  const ram: GuestRam = { bytes: () => mem, written: (s, e) => void dirty.push([s, e]) };
  const q: QueueRegisters = { size: SIZE, desc: DESC, avail: AVAIL, used: USED, lastAvail: 0 };
  let availIdx = 0;
  const desc = (i: number, d: Desc) => {
    const at = DESC + 16 * i;
    view.setUint32(at, d.addr, true);
    view.setUint32(at + 4, d.high ?? 0, true);
    view.setUint32(at + 8, d.len, true);
    view.setUint16(at + 12, d.flags, true);
    view.setUint16(at + 14, d.next ?? 0, true);
  };
  /** Posts a chain of descriptors at table slots first..; returns its head. */
  const post = (first: number, ds: Desc[]) => {
    ds.forEach((d, k) => desc(first + k, { next: first + k + 1, ...d, flags: d.flags | (k < ds.length - 1 ? NEXT : 0) }));
    view.setUint16(AVAIL + 4 + 2 * (availIdx % SIZE), first, true);
    view.setUint16(AVAIL + 2, ++availIdx, true);
    return first;
  };
  return { mem, view, ram, q, dirty, desc, post, setAvailIdx: (v: number) => view.setUint16(AVAIL + 2, (availIdx = v), true) };
}

describe("virtqueue", () => {
  it("reads a chain's readable and writable buffers in order and hands it back", () => {
    const t = setup();
    t.mem.set([1, 2, 3, 4], 0x10000);
    t.mem.set([5, 6, 7, 8], 0x20000);
    t.post(0, [
      { addr: 0x10000, len: 4, flags: 0 },
      { addr: 0x20000, len: 4, flags: 0 },
      { addr: 0x30000, len: 3, flags: WRITE },
      { addr: 0x40000, len: 2, flags: WRITE },
    ]);
    const c = popChain(t.ram, t.q)!;
    expect(c.fault).toBeNull();
    expect([c.readableBytes, c.writableBytes]).toEqual([8, 5]);
    const got = new Uint8Array(6);
    expect(c.read(got)).toBe(6);
    expect([...got]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(c.write(Uint8Array.of(9, 9, 9, 9))).toBe(4);
    c.writeLastByte(0x42);
    expect([...t.mem.subarray(0x30000, 0x30004)]).toEqual([9, 9, 9, 0]);
    expect([...t.mem.subarray(0x40000, 0x40003)]).toEqual([9, 0x42, 0]);
    // Every byte the device wrote was reported as written (compiled code there is stale).
    expect(t.dirty).toEqual(expect.arrayContaining([[0x30000, 0x30003], [0x40000, 0x40001], [0x40001, 0x40002]]));
    expect(popChain(t.ram, t.q)).toBeUndefined();

    expect(pushUsed(t.ram, t.q, [c])).toBe(true);
    expect(t.view.getUint16(USED + 2, true)).toBe(1);
    expect([t.view.getUint32(USED + 4, true), t.view.getUint32(USED + 8, true)]).toEqual([0, 5]);
  });

  it("takes requests in avail order across the 16-bit wrap of the indices", () => {
    const t = setup();
    t.q.lastAvail = 0xfffe;
    t.view.setUint16(USED + 2, 0xfffe, true);
    t.view.setUint16(AVAIL + 4 + 2 * (0xfffe % SIZE), 3, true);
    t.view.setUint16(AVAIL + 4 + 2 * (0xffff % SIZE), 5, true);
    t.view.setUint16(AVAIL + 4 + 2 * (0 % SIZE), 6, true);
    t.setAvailIdx(1);
    for (const i of [3, 5, 6]) t.desc(i, { addr: 0x10000, len: 1, flags: WRITE });
    const heads = [popChain(t.ram, t.q), popChain(t.ram, t.q), popChain(t.ram, t.q)];
    expect(heads.map((c) => c?.head)).toEqual([3, 5, 6]);
    expect(popChain(t.ram, t.q)).toBeUndefined();
    pushUsed(t.ram, t.q, heads.map((c) => c!));
    expect(t.view.getUint16(USED + 2, true)).toBe(1);
    expect(t.view.getUint32(USED + 4 + 8 * (0xffff % SIZE), true)).toBe(5);
  });

  it("honours the driver's request for no interrupt", () => {
    const t = setup();
    t.post(0, [{ addr: 0x10000, len: 1, flags: WRITE }]);
    t.view.setUint16(AVAIL, 1, true);
    expect(pushUsed(t.ram, t.q, [popChain(t.ram, t.q)!])).toBe(false);
  });

  const broken: Array<[string, (t: ReturnType<typeof setup>) => void, RegExp]> = [
    ["a head past the table", (t) => (t.view.setUint16(AVAIL + 4, SIZE + 3, true), t.setAvailIdx(1)), /descriptor 11 past the table/],
    ["a next index past the table", (t) => t.post(0, [{ addr: 0x10000, len: 1, flags: NEXT, next: 200 }]), /descriptor 200 past the table/],
    ["a loop", (t) => (t.desc(0, { addr: 0x10000, len: 1, flags: NEXT, next: 1 }), t.desc(1, { addr: 0x10000, len: 1, flags: NEXT, next: 0 }), t.view.setUint16(AVAIL + 4, 0, true), t.setAvailIdx(1)), /loops/],
    ["a buffer past the end of RAM", (t) => t.post(0, [{ addr: RAM - 4, len: 8, flags: WRITE }]), /outside guest memory/],
    ["a buffer whose end wraps 32 bits", (t) => t.post(0, [{ addr: 0xfffffff0, len: 0x20, flags: 0 }]), /outside guest memory/],
    ["a buffer above 4 GiB", (t) => t.post(0, [{ addr: 0x10000, len: 1, flags: 0, high: 1 }]), /above 4 GiB/],
    ["an indirect table", (t) => t.post(0, [{ addr: 0x10000, len: 32, flags: INDIRECT }]), /indirect/],
    ["a readable buffer after a writable one", (t) => t.post(0, [{ addr: 0x10000, len: 1, flags: WRITE }, { addr: 0x20000, len: 1, flags: 0 }]), /readable buffer after/],
  ];
  for (const [what, make, why] of broken) {
    it(`faults a chain with ${what}, and touches nothing through it`, () => {
      const t = setup();
      make(t);
      const before = t.mem.slice();
      const c = popChain(t.ram, t.q)!;
      expect(c.fault).toMatch(why);
      expect([c.readableBytes, c.writableBytes]).toEqual([0, 0]);
      expect(c.read(new Uint8Array(16))).toBe(0);
      expect(c.write(new Uint8Array(16).fill(0xee))).toBe(0);
      c.writeLastByte(0xee);
      expect(Buffer.compare(t.mem, before)).toBe(0);
      // It still goes back to the driver, with nothing written.
      pushUsed(t.ram, t.q, [c]);
      expect(t.view.getUint32(USED + 8, true)).toBe(0);
    });
  }

  it("takes nothing from a ring whose avail index runs more than a queue ahead", () => {
    const t = setup();
    t.setAvailIdx(SIZE + 1);
    expect(popChain(t.ram, t.q)).toBeUndefined();
    expect(t.q.lastAvail).toBe(0);
  });

  it("takes nothing from, and writes nothing to, a queue placed outside RAM", () => {
    const t = setup();
    t.post(0, [{ addr: 0x10000, len: 1, flags: WRITE }]);
    const c = popChain(t.ram, t.q)!;
    const before = t.mem.slice();
    for (const q of [{ ...t.q, used: RAM - 8 }, { ...t.q, avail: RAM }, { ...t.q, desc: RAM - 16 }, { ...t.q, size: 6 }]) {
      expect(popChain(t.ram, q)).toBeUndefined();
      expect(pushUsed(t.ram, q, [c])).toBe(false);
    }
    expect(Buffer.compare(t.mem, before)).toBe(0);
  });
});
