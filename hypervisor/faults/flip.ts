// The `flip` fault: software-implemented fault injection in the style of the
// Nooks and MINIX 3 campaigns. Random bits of a driver's code are flipped in
// the guest's memory, found through the guest's own page tables; whatever
// the corrupted driver then does (oops, hang, wrong data, nothing) is the
// outcome. Runs in the VM's worker, which owns the machine's memory.
import type { Machine } from "../v86/adapter.js";

export interface FlipRange {
  start: number;
  end: number;
}

export interface Flip {
  virtual: number;
  physical: number;
  bit: number;
}

/** A small seeded generator (mulberry32): a campaign is repeatable from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Flips `bits` random bits in the code ranges; unmapped picks are skipped. */
export function flipBits(machine: Machine, ranges: FlipRange[], bits: number, seed: number): Flip[] {
  const total = ranges.reduce((n, r) => n + Math.max(0, r.end - r.start), 0);
  if (total === 0) throw new Error("no driver code to flip");
  const random = prng(seed);
  const flips: Flip[] = [];
  for (let tries = 0; flips.length < bits && tries < bits * 10; tries++) {
    let pick = Math.floor(random() * total);
    const range = ranges.find((r) => (pick < r.end - r.start ? true : ((pick -= r.end - r.start), false)))!;
    const virtual = range.start + pick;
    const physical = machine.translate(virtual);
    if (physical === undefined || physical >= machine.memory().length) continue;
    const bit = Math.floor(random() * 8);
    const byte = machine.memory()[physical] ^ (1 << bit);
    // writePhysical also drops JIT code compiled from the page, so the flip takes effect.
    machine.writePhysical(physical, Uint8Array.of(byte));
    flips.push({ virtual, physical, bit });
  }
  return flips;
}
