// The net VM's back end against netback played by the test: frames into
// ring A, frames out of ring B, and every lie netback can tell.
import { describe, expect, it } from "vitest";
import { NetBackEnd } from "../../../dist/drivervm/net/backend.js";
import { NET_RING as R, toGuestSlot, toHostSlot } from "../../../dist/drivervm/net/frame-ring.js";
import { GuestWindow } from "../../../dist/drivervm/window.js";
import type { Machine } from "../../../dist/hypervisor/v86/adapter.js";

const MEMORY_PAGES = 1024;

function setup() {
  const mem = new Uint8Array(MEMORY_PAGES * 4096);
  const machine = { memory: () => mem, writePhysical: (a: number, d: Uint8Array) => mem.set(d, a) } as unknown as Machine;
  // Frames 200.. reversed, to catch offset mistakes.
  const w = new GuestWindow(Array.from({ length: R.WINDOW_PAGES }, (_, i) => 200 + R.WINDOW_PAGES - 1 - i));
  w.writeU32(machine, R.OFF_MAGIC, R.MAGIC);
  const frames: Uint8Array[] = [];
  const violations: string[] = [];
  let kicks = 0;
  const host = { full: false };
  const be = new NetBackEnd(machine, () => kicks++, (f) => !host.full && frames.push(f.slice()) > 0, (v) => violations.push(v));
  be.attachWindow(w);
  let hostProd = 0;
  /** Plays netback: puts an entry with this length field (and these bytes) into ring B. */
  const put = (length: number, bytes = new Uint8Array(Math.min(length, 2044)).fill(0x5a)) => {
    const slot = toHostSlot(hostProd);
    w.writeU32(machine, slot, length);
    w.copyIn(machine, slot + R.SLOT_HEADER, bytes.subarray(0, 2044));
    hostProd++;
    w.writeU32(machine, R.OFF_TO_HOST_PROD, hostProd);
  };
  /** Plays netback: takes everything in ring A. */
  const take = () => {
    const out: Uint8Array[] = [];
    let cons = w.readU32(machine, R.OFF_TO_GUEST_CONS);
    const prod = w.readU32(machine, R.OFF_TO_GUEST_PROD);
    for (; cons !== prod; cons++) {
      const slot = toGuestSlot(cons);
      out.push(w.copyOut(machine, slot + R.SLOT_HEADER, w.readU32(machine, slot)));
    }
    w.writeU32(machine, R.OFF_TO_GUEST_CONS, cons);
    return out;
  };
  return { machine, w, be, frames, violations, put, take, kicks: () => kicks, host };
}

const frame = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

describe("NetBackEnd (net VM side)", () => {
  it("puts the app VM's frames into ring A, ringing netback when the ring was empty", () => {
    const { be, take, kicks } = setup();
    be.send(frame(60, 1));
    be.send(frame(1514, 2));
    expect(kicks()).toBe(1);
    const got = take();
    expect(got.map((f) => [f.length, f[0]])).toEqual([
      [60, 1],
      [1514, 2],
    ]);
    expect(be.metrics.framesOut).toBe(2);
  });

  it("keeps frames that find ring A full, in order, and sends them when netback catches up", () => {
    const { be, take } = setup();
    for (let i = 0; i < R.SLOTS + 10; i++) be.send(frame(100, i & 0xff));
    expect(take()).toHaveLength(R.SLOTS);
    be.onDoorbell();
    const rest = take();
    expect(rest.map((f) => f[0])).toEqual(Array.from({ length: 10 }, (_, i) => R.SLOTS + i));
  });

  it("passes well-formed frames from ring B on and drops runt and oversized ones, counted", () => {
    const { be, put, frames, violations } = setup();
    put(60);
    put(5);
    put(0);
    put(1515);
    put(0xffffffff);
    put(1514);
    be.onDoorbell();
    expect(frames.map((f) => f.length)).toEqual([60, 1514]);
    expect(be.status().drops).toMatchObject({ "from-netback-malformed": 4 });
    expect(violations[0]).toMatch(/runt frame of 5 bytes/);
  });

  it("leaves frames in ring B while the app VM's side cannot take them, and passes them on in order later", () => {
    const { w, machine, be, frames, put, host } = setup();
    host.full = true;
    put(100, frame(100, 1));
    put(200, frame(200, 2));
    be.onDoorbell();
    expect(frames).toHaveLength(0);
    // Not consumed: netback sees its ring still full and keeps the rest in its socket's receive ring.
    expect(w.readU32(machine, R.OFF_TO_HOST_CONS)).toBe(0);
    host.full = false;
    be.onDoorbell();
    expect(frames.map((f) => [f.length, f[0]])).toEqual([
      [100, 1],
      [200, 2],
    ]);
    expect(w.readU32(machine, R.OFF_TO_HOST_CONS)).toBe(2);
    expect(be.status().drops).toEqual({});
  });

  it("refuses an impossible producer index in ring B without reading the ring", () => {
    const { be, w, machine, frames } = setup();
    w.writeU32(machine, R.OFF_TO_HOST_PROD, 5000);
    be.onDoorbell();
    expect(frames).toHaveLength(0);
    expect(be.status().drops).toMatchObject({ "ring-overrun": 1 });
    expect(w.readU32(machine, R.OFF_TO_HOST_CONS)).toBe(5000);
  });

  it("treats an impossible consumer index in ring A as a full ring, never overwriting past it", () => {
    const { be, w, machine } = setup();
    w.writeU32(machine, R.OFF_TO_GUEST_CONS, 3000);
    be.send(frame(60));
    expect(be.status().drops).toMatchObject({ "ring-overrun": 1 });
    expect(w.readU32(machine, R.OFF_TO_GUEST_PROD)).toBe(0);
    expect(be.status().backlog).toBe(1);
  });

  it("keeps frames that come before netback registers its window, bounded, and sends them once it does", () => {
    const mem = new Uint8Array(MEMORY_PAGES * 4096);
    const machine = { memory: () => mem, writePhysical: (a: number, d: Uint8Array) => mem.set(d, a) } as unknown as Machine;
    const be = new NetBackEnd(machine, () => {}, () => true, () => {});
    for (let i = 0; i < 300; i++) be.send(frame(60, i & 0xff));
    expect(be.status()).toMatchObject({ backlog: 256, drops: { "no-window": 44 } });
    const w = new GuestWindow(Array.from({ length: R.WINDOW_PAGES }, (_, i) => 300 + i));
    w.writeU32(machine, R.OFF_MAGIC, R.MAGIC);
    be.attachWindow(w);
    expect(w.readU32(machine, R.OFF_TO_GUEST_PROD)).toBe(R.SLOTS);
    expect(w.copyOut(machine, toGuestSlot(0) + R.SLOT_HEADER, 1)[0]).toBe(0);
    be.stop();
  });
});
