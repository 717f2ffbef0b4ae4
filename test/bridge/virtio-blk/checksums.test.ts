import { describe, expect, it } from "vitest";
import { WrittenChecksums, sectorHash } from "../../../dist/bridge/virtio-blk/checksums.js";
import { seededBytes as random } from "../seeded-bytes.js";

const SECTOR = 512;
const hashOf = (sector: Uint8Array) => sectorHash(new Uint32Array(sector.buffer, sector.byteOffset, SECTOR / 4), 0);

describe("sectorHash", () => {
  it("changes with every single bit of the sector", () => {
    const sector = random(SECTOR, 7);
    const h = hashOf(sector);
    for (let bit = 0; bit < SECTOR * 8; bit++) {
      sector[bit >> 3] ^= 1 << (bit & 7);
      expect(hashOf(sector), `bit ${bit}`).not.toBe(h);
      sector[bit >> 3] ^= 1 << (bit & 7);
    }
  });

  it("changes when the top bit of two words flips (a plain multiply-xor hash would not)", () => {
    const sector = random(SECTOR, 9);
    const h = hashOf(sector);
    for (const [a, b] of [[0, 2], [3, 100], [1, 127]]) {
      sector[a * 4 + 3] ^= 0x80;
      sector[b * 4 + 3] ^= 0x80;
      expect(hashOf(sector)).not.toBe(h);
      sector[a * 4 + 3] ^= 0x80;
      sector[b * 4 + 3] ^= 0x80;
    }
  });

  it("tells words apart by position (swapping two words changes it)", () => {
    const sector = random(SECTOR, 11);
    const swapped = sector.slice();
    swapped.set(sector.subarray(0, 4), 8);
    swapped.set(sector.subarray(8, 12), 0);
    expect(hashOf(swapped)).not.toBe(hashOf(sector));
  });
});

describe("WrittenChecksums", () => {
  it("finds exactly the damaged sectors of a read, aligned or not, and ignores sectors never written", () => {
    const sums = new WrittenChecksums(64);
    const written = random(8 * SECTOR, 3);
    sums.record(8, written);
    expect(sums.mismatches(8, written)).toEqual([]);
    // The same bytes at an odd offset of a larger buffer (a view into a ring).
    const holder = new Uint8Array(8 * SECTOR + 1);
    holder.set(written, 1);
    expect(sums.mismatches(8, holder.subarray(1))).toEqual([]);
    const damaged = written.slice();
    damaged[2 * SECTOR + 17] ^= 0x10;
    damaged[7 * SECTOR] ^= 0x01;
    expect(sums.mismatches(8, damaged)).toEqual([10, 15]);
    holder.set(damaged, 1);
    expect(sums.mismatches(8, holder.subarray(1))).toEqual([10, 15]);
    // Sectors 0-7 were never written: any content is accepted there.
    expect(sums.mismatches(0, random(8 * SECTOR, 5))).toEqual([]);
    // A write on its way makes its sectors unknown again.
    sums.forget(10, SECTOR);
    expect(sums.mismatches(8, damaged)).toEqual([15]);
  });
});
