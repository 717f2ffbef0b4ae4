// The NE2000 receive ring's free pages, as the adapter paces frames into it.
import { describe, expect, it } from "vitest";
import { ne2kPagesFor, ne2kRoom } from "../../../hypervisor/v86/adapter.js";

// ne2k-pci's ring: pages 0x4c up to (not including) 0x80, 52 pages.
const ring = (curpg: number, boundary: number) => ({ curpg, boundary, pstart: 0x4c, pstop: 0x80 });

describe("NE2000 ring room", () => {
  it("leaves every page but BNRY's free when the driver has read everything", () => {
    // The driver keeps BNRY one page behind the next frame it reads (CURR when empty).
    expect(ne2kRoom(ring(0x4d, 0x4c))).toBe(51);
    expect(ne2kRoom(ring(0x4c, 0x7f))).toBe(51);
  });

  it("counts the pages up to, not into, BNRY, across the wrap", () => {
    expect(ne2kRoom(ring(0x50, 0x60))).toBe(16);
    expect(ne2kRoom(ring(0x7e, 0x4e))).toBe(4); // 0x7e, 0x7f, 0x4c, 0x4d
  });

  it("is zero when CURR has caught up with BNRY: the ring is full, not empty", () => {
    // v86's own check reads this as an empty ring and overwrites unread frames.
    expect(ne2kRoom(ring(0x60, 0x60))).toBe(0);
    expect(ne2kRoom(ring(0x4c, 0x4c))).toBe(0);
  });

  it("sizes a frame as v86 writes it: a 4-byte header, runts padded to 60 bytes", () => {
    expect(ne2kPagesFor(42)).toBe(1);
    expect(ne2kPagesFor(252)).toBe(2); // 256 bytes with the header: v86 and the driver skip a page
    expect(ne2kPagesFor(1514)).toBe(6);
    // A full-size frame fits exactly when six pages are free, and then the ring is full.
    expect(ne2kRoom(ring(0x50, 0x56))).toBe(ne2kPagesFor(1514));
  });

  it("has no room in a ring with no pages", () => {
    expect(ne2kRoom({ curpg: 0x40, boundary: 0x40, pstart: 0x40, pstop: 0x40 })).toBe(0);
  });
});
