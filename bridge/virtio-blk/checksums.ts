// What the front end remembers of the app VM's writes, so that a driver VM
// whose driver was corrupted cannot hand the app VM wrong data silently or
// lose an acknowledged write:
// - a CRC32 of every 512-byte sector written and acknowledged in this run
//   (sectors with a write in flight are unknown), checked on every read;
// - a bounded log of the most recent writes' data, to write again what a
//   faulty driver may have written wrongly: the writes acknowledged shortly
//   before a fault, and any sector a read finds damaged.
import { crc32 } from "node:zlib";
import { SECTOR } from "./request.js";

/** How much recent written data the log keeps (bounded by the disk's size). */
export const WRITE_LOG_BYTES = 128 * 2 ** 20;

export class WrittenChecksums {
  private readonly crcs: Uint32Array;
  /** Bit per sector: its CRC is known. */
  private readonly known: Uint8Array;

  constructor(readonly sectors: number) {
    this.crcs = new Uint32Array(sectors);
    this.known = new Uint8Array(Math.ceil(sectors / 8));
  }

  /** A write is on its way (or its sectors are given up): either content may be read. */
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

  /** Every sector of a read whose data is not what was written there. */
  mismatches(sector: number, data: Uint8Array): number[] {
    const bad: number[] = [];
    for (let i = 0; i < data.length / SECTOR; i++) {
      const s = sector + i;
      if (this.known[s >> 3] & (1 << (s & 7)) && crc32(data.subarray(i * SECTOR, (i + 1) * SECTOR)) !== this.crcs[s]) bad.push(s);
    }
    return bad;
  }
}

interface Logged {
  sector: number;
  data: Uint8Array;
  at: number;
}

/** The most recent acknowledged writes, oldest first, bounded by bytes. */
export class WriteLog {
  private readonly entries: Logged[] = [];
  private readonly latest = new Map<number, Logged>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  add(sector: number, data: Uint8Array, at = performance.now()): void {
    if (data.length > this.maxBytes) return;
    const e = { sector, data, at };
    this.entries.push(e);
    this.bytes += data.length;
    for (let i = 0; i < data.length / SECTOR; i++) this.latest.set(sector + i, e);
    while (this.bytes > this.maxBytes) {
      const old = this.entries.shift()!;
      this.bytes -= old.data.length;
      for (let i = 0; i < old.data.length / SECTOR; i++) if (this.latest.get(old.sector + i) === old) this.latest.delete(old.sector + i);
    }
  }

  /** The last data written to a sector, if the log still has it. */
  sector(s: number): Uint8Array | undefined {
    const e = this.latest.get(s);
    return e ? e.data.subarray((s - e.sector) * SECTOR, (s - e.sector + 1) * SECTOR) : undefined;
  }

  /** Writes acknowledged since `since`, oldest first, each still the latest for all its sectors. */
  since(since: number): Array<{ sector: number; data: Uint8Array }> {
    const out: Array<{ sector: number; data: Uint8Array }> = [];
    for (let i = this.entries.length - 1; i >= 0 && this.entries[i].at >= since; i--) {
      const e = this.entries[i];
      if (this.latest.get(e.sector) === e && this.latest.get(e.sector + e.data.length / SECTOR - 1) === e) out.unshift({ sector: e.sector, data: e.data });
    }
    return out;
  }
}
