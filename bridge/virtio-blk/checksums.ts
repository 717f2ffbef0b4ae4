// What the front end remembers of the app VM's writes, so that a driver VM
// whose driver was corrupted cannot hand the app VM wrong data silently or
// lose an acknowledged write:
// - a 32-bit hash of every 512-byte sector written and acknowledged in this
//   run (sectors with a write in flight are unknown), checked on every read;
// - a bounded log of the most recent writes' data, to write again what a
//   faulty driver may have written wrongly: the writes acknowledged shortly
//   before a fault, and any sector a read finds damaged.
import { MAX_TRANSFER, SECTOR } from "./request.js";

const SECTOR_WORDS = SECTOR / 4;
/** Where data that is not 4-byte aligned is copied to be hashed by words. */
const scratch = new Uint32Array(MAX_TRANSFER / 4);

/** The data as 32-bit words, without a copy when it is aligned. */
function words(data: Uint8Array): Uint32Array {
  const count = data.length >>> 2;
  if ((data.byteOffset & 3) === 0) return new Uint32Array(data.buffer, data.byteOffset, count);
  const into = count <= scratch.length ? scratch : new Uint32Array(count);
  new Uint8Array(into.buffer, 0, data.length).set(data);
  return into;
}

/** One word into a MurmurHash3 x86_32 state. */
function mix(h: number, word: number): number {
  let x = Math.imul(word, 0xcc9e2d51);
  x = (x << 15) | (x >>> 17);
  h ^= Math.imul(x, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/**
 * A 32-bit hash of the sector at word `first`: MurmurHash3's x86_32 mixing
 * in four lanes (words 0, 4, 8... in the first, 1, 5, 9... in the second),
 * which the CPU runs side by side, then the four lanes mixed into one.
 * Every front-end read and write hashes each of its sectors: zlib's crc32,
 * called once per sector, cost 43-58 us per 64 KiB in the app VM's worker
 * (the call and a view per sector), one lane 24-36 us, four lanes 15 us.
 * Like a CRC it tells a damaged sector from the one written (each step is
 * a bijection of the lane's state, so one changed word always changes the
 * hash), and like a CRC it does not resist a forger.
 */
export function sectorHash(w: Uint32Array, first: number): number {
  let a = 0x9747b28c;
  let b = 0x85ebca6b;
  let c = 0xc2b2ae35;
  let d = 0x27d4eb2f;
  for (let k = first, end = first + SECTOR_WORDS; k < end; k += 4) {
    a = mix(a, w[k]);
    b = mix(b, w[k + 1]);
    c = mix(c, w[k + 2]);
    d = mix(d, w[k + 3]);
  }
  let h = mix(mix(mix(mix(0x9747b28c, a), b), c), d) ^ SECTOR;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The runs of indices in [0, count) for which `keep` holds, as [start, end) pairs, in order. */
export function runsWhere(count: number, keep: (i: number) => boolean): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let i = 0, start = -1; i <= count; i++) {
    const kept = i < count && keep(i);
    if (kept && start < 0) start = i;
    else if (!kept && start >= 0) {
      runs.push([start, i]);
      start = -1;
    }
  }
  return runs;
}

/** How much recent written data the log keeps (bounded by the disk's size). */
export const WRITE_LOG_BYTES = 128 * 2 ** 20;

export class WrittenChecksums {
  private readonly hashes: Uint32Array;
  /** Bit per sector: its hash is known. */
  private readonly known: Uint8Array;

  constructor(readonly sectors: number) {
    this.hashes = new Uint32Array(sectors);
    this.known = new Uint8Array(Math.ceil(sectors / 8));
  }

  /** A write is on its way (or its sectors are given up): either content may be read. */
  forget(sector: number, length: number): void {
    for (let s = sector, n = length / SECTOR; n > 0; s++, n--) this.known[s >> 3] &= ~(1 << (s & 7));
  }

  /** A write was acknowledged: its sectors now hold this data. */
  record(sector: number, data: Uint8Array): void {
    const w = words(data);
    for (let i = 0, sectors = Math.floor(data.length / SECTOR); i < sectors; i++) {
      const s = sector + i;
      this.hashes[s] = sectorHash(w, i * SECTOR_WORDS);
      this.known[s >> 3] |= 1 << (s & 7);
    }
  }

  /** Every sector of a read whose data is not what was written there. */
  mismatches(sector: number, data: Uint8Array): number[] {
    const bad: number[] = [];
    let w: Uint32Array | undefined;
    for (let i = 0, sectors = Math.floor(data.length / SECTOR); i < sectors; i++) {
      const s = sector + i;
      if (!(this.known[s >> 3] & (1 << (s & 7)))) continue;
      w ??= words(data);
      if (sectorHash(w, i * SECTOR_WORDS) !== this.hashes[s]) bad.push(s);
    }
    return bad;
  }
}

/**
 * The most recent acknowledged writes, oldest first, bounded by bytes. The
 * data lives in one circular buffer and the bookkeeping in typed arrays
 * (allocated at the first write), not in a buffer and a map entry per write:
 * 128 MiB of long-lived 64 KiB buffers and a map of a quarter million
 * sectors made V8's garbage collector a large share of the app VM's worker
 * on a write-heavy load. What it hands out is a copy: the buffer's bytes are
 * reused once newer writes have gone round.
 */
export class WriteLog {
  private buf = new Uint8Array(0);
  /** Bytes ever appended, counting the tail skipped when a write did not fit before the end. */
  private head = 0;
  private writeAt = 0;
  /** Records, oldest first: sequence numbers [first, next), slot seq % slots. */
  private first = 0;
  private next = 0;
  private slots = 0;
  private recStart = new Float64Array(0);
  private recOffset = new Int32Array(0);
  private recSector = new Float64Array(0);
  private recLength = new Int32Array(0);
  private recAt = new Float64Array(0);
  /** Per sector: 1 + the sequence number of the newest write that covered it, or 0. */
  private latest = new Float64Array(0);

  constructor(
    private readonly maxBytes: number,
    private readonly sectors: number,
  ) {}

  add(sector: number, data: Uint8Array, at = performance.now()): void {
    const length = data.length;
    if (length === 0 || length > this.maxBytes || length % SECTOR !== 0 || sector + length / SECTOR > this.sectors) return;
    if (this.buf.length === 0) this.allocate();
    if (this.writeAt + length > this.buf.length) {
      this.head += this.buf.length - this.writeAt;
      this.writeAt = 0;
    }
    const start = this.head;
    // Records whose bytes the new one overwrites, and any past the slot count, go.
    while (this.first < this.next && (this.recStart[this.first % this.slots] < start + length - this.buf.length || this.next - this.first >= this.slots)) this.first++;
    this.buf.set(data, this.writeAt);
    const slot = this.next % this.slots;
    this.recStart[slot] = start;
    this.recOffset[slot] = this.writeAt;
    this.recSector[slot] = sector;
    this.recLength[slot] = length;
    this.recAt[slot] = at;
    this.latest.fill(this.next + 1, sector, sector + length / SECTOR);
    this.next++;
    this.head += length;
    this.writeAt += length;
  }

  /** The last data written to a sector, if the log still has it (a copy). */
  sector(s: number): Uint8Array | undefined {
    const seq = this.latestLive(s);
    if (seq === undefined) return undefined;
    const slot = seq % this.slots;
    const at = this.recOffset[slot] + (s - this.recSector[slot]) * SECTOR;
    return this.buf.slice(at, at + SECTOR);
  }

  /**
   * What the writes acknowledged since `since` left on the disk, oldest
   * first: for each, the runs of its sectors that no newer write covered
   * (copies). A write half covered by a newer one still has its other half
   * here.
   */
  since(since: number): Array<{ sector: number; data: Uint8Array }> {
    const out: Array<{ sector: number; data: Uint8Array }> = [];
    for (let seq = this.next - 1; seq >= this.first && this.recAt[seq % this.slots] >= since; seq--) {
      const slot = seq % this.slots;
      const sector = this.recSector[slot];
      const offset = this.recOffset[slot];
      const runs = runsWhere(this.recLength[slot] / SECTOR, (i) => this.latestLive(sector + i) === seq);
      out.unshift(...runs.map(([a, b]) => ({ sector: sector + a, data: this.buf.slice(offset + a * SECTOR, offset + b * SECTOR) })));
    }
    return out;
  }

  private latestLive(s: number): number | undefined {
    if (s < 0 || s >= this.latest.length) return undefined;
    const seq = this.latest[s] - 1;
    return seq >= this.first ? seq : undefined;
  }

  private allocate(): void {
    this.buf = new Uint8Array(this.maxBytes);
    this.slots = Math.max(1, Math.floor(this.maxBytes / SECTOR));
    this.recStart = new Float64Array(this.slots);
    this.recOffset = new Int32Array(this.slots);
    this.recSector = new Float64Array(this.slots);
    this.recLength = new Int32Array(this.slots);
    this.recAt = new Float64Array(this.slots);
    this.latest = new Float64Array(this.sectors);
  }
}
