import { describe, expect, it } from "vitest";
import { GuestWindow } from "../../dist/drivervm/window.js";
import type { Machine } from "../../dist/hypervisor/v86/adapter.js";

const PAGE = 4096;

describe("GuestWindow.views", () => {
  it("lends window bytes as views of guest memory, one per run of contiguous frames", () => {
    const mem = new Uint8Array(64 * PAGE);
    for (let i = 0; i < mem.length; i++) mem[i] = (i / PAGE) & 0xff; // each byte names its frame
    const machine = { memory: () => mem } as unknown as Machine;
    // Frames 10, 11, 12 are contiguous; 30 is not; 31 follows it.
    const w = new GuestWindow([10, 11, 12, 30, 31]);
    const views = w.views(machine, PAGE / 2, 4 * PAGE);
    expect(views.map((v) => [v.length, v[0], v[v.length - 1]])).toEqual([
      [2.5 * PAGE, 10, 12],
      [1.5 * PAGE, 30, 31],
    ]);
    expect(views.every((v) => v.buffer === mem.buffer)).toBe(true);
    expect(() => w.views(machine, 4 * PAGE, 2 * PAGE)).toThrow();
  });
});

describe("GuestWindow.copyIn", () => {
  it("writes each run of contiguous frames at once, and every byte where its page lives", () => {
    const mem = new Uint8Array(64 * PAGE);
    const writes: Array<[number, number]> = [];
    const machine = {
      writePhysical: (address: number, data: Uint8Array) => {
        writes.push([address, data.length]);
        mem.set(data, address);
      },
    } as unknown as Machine;
    const pfns = [5, 6, 7, 20, 21, 3];
    const w = new GuestWindow(pfns);
    expect(w.runs).toBe(3);
    const data = Uint8Array.from({ length: 5 * PAGE + 100 }, (_, i) => (i * 7) & 0xff);
    w.copyIn(machine, 50, data);
    expect(writes).toEqual([
      [5 * PAGE + 50, 3 * PAGE - 50],
      [20 * PAGE, 2 * PAGE],
      [3 * PAGE, 150],
    ]);
    for (let i = 0; i < data.length; i++) {
      const at = 50 + i;
      expect(mem[pfns[Math.floor(at / PAGE)] * PAGE + (at % PAGE)]).toBe(data[i]);
    }
  });
});
