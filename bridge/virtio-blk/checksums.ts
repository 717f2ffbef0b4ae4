// Checksums of what the app VM wrote, kept by its front end, so that a read
// reply carrying wrong data (a driver VM whose driver was corrupted) is
// caught instead of handed to the app VM. One CRC32 per 512-byte sector the
// front end saw written and acknowledged in this run; sectors with a write
// in flight, or never written through it, are not checked.
import { crc32 } from "node:zlib";
import { SECTOR } from "./request.js";

export class WrittenChecksums {
  private readonly crcs: Uint32Array;
  /** Bit per sector: its CRC is known. */
  private readonly known: Uint8Array;

  constructor(readonly sectors: number) {
    this.crcs = new Uint32Array(sectors);
    this.known = new Uint8Array(Math.ceil(sectors / 8));
  }

  /** A write is on its way: until it is acknowledged either content may be read. */
  forget(sector: number, length: number): void {
    for (let s = sector, n = length / SECTOR; n > 0; s++, n--) this.known[s >> 3] &= ~(1 << (s & 7));
  }

  /** A write was acknowledged: its sectors now hold this data. */
  record(sector: number, data: Uint8Array): void {
    for (let i = 0; i < data.length / SECTOR; i++) {
      const s = sector + i;
      this.crcs[s] = crc32(data.subarray(i * SECTOR, (i + 1) * SECTOR));
      this.known[s >> 3] |= 1 << (s & 7);
    }
  }

  /** The first sector of a read whose data is not what was written there, or -1. */
  mismatch(sector: number, data: Uint8Array): number {
    for (let i = 0; i < data.length / SECTOR; i++) {
      const s = sector + i;
      if (this.known[s >> 3] & (1 << (s & 7)) && crc32(data.subarray(i * SECTOR, (i + 1) * SECTOR)) !== this.crcs[s]) return s;
    }
    return -1;
  }
}
