// A single-producer single-consumer message ring in a SharedArrayBuffer,
// shared by two worker threads. The peer is not trusted to be bug-free:
// the reader checks every word it takes from shared memory before using it,
// so a broken peer can only produce a RingError, never a RangeError, an
// endless loop or a read outside the data area.
//
// Layout: a 64-byte header of Int32 words, then `capacity` bytes of data.
// Records are a u32 length word, the payload, and padding to 4 bytes, stored
// contiguously. A record that does not fit before the end of the data area
// is preceded by a wrap marker and placed at offset 0.

export const RING_MAGIC = 0x42485247; // "BHRG"
export const RING_VERSION = 1;
export const RING_HEADER_BYTES = 64;
export const RING_MIN_BYTES = 64;
export const RING_MAX_BYTES = 1 << 30;

// Header word indices.
const MAGIC = 0;
const VERSION = 1;
const CAPACITY = 2;
const GENERATION = 3;
/** Bytes ever written, mod 2^32; stored only by the writer. */
const WRITE = 4;
/** Bytes ever consumed, mod 2^32; stored only by the reader. */
const READ = 5;
/** Bumped by the writer after publishing; the reader sleeps on it. */
const DOORBELL = 6;
const REVOKED = 7;
/** How many of the writer's waits for space are pending: the reader then wakes them on every read. */
const SPACE_WANTED = 8;
/**
 * 1 while the reader may sleep on the doorbell (the writer must notify), 0
 * while it promises to look at the ring again soon by itself: a reader in a
 * busy v86 worker looks after every slice of guest time, and the writer then
 * skips Atomics.notify, which costs tens to hundreds of microseconds when
 * the two threads contend (docs/benchmarks.md).
 */
const READER_ASLEEP = 9;

const WRAP = 0xffffffff;

// Atomics.waitAsync is in Node 20 but not in the ES2022 lib we compile against.
type WaitAsyncResult = { async: false; value: "not-equal" | "timed-out" } | { async: true; value: Promise<"ok" | "timed-out"> };
const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, i: number, v: number) => WaitAsyncResult }).waitAsync.bind(Atomics);

export type RingErrorCode = "bad-buffer" | "version" | "size" | "too-large" | "corrupt";

export class RingError extends Error {
  override readonly name = "RingError";
  constructor(
    readonly code: RingErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const isPowerOfTwo = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

export class Ring {
  readonly buffer: SharedArrayBuffer;
  /** Size of the data area in bytes (a power of two). */
  readonly capacity: number;
  /**
   * Largest payload one message may carry: half the data area less the
   * length word. Bounding a record to half the ring means an empty ring
   * accepts any legal message wherever the write position stands, so a
   * writer never waits for space that can never appear.
   */
  readonly maxMessageBytes: number;
  readonly generation: number;
  private readonly header: Int32Array;
  private readonly data: Uint8Array;
  private readonly words: Uint32Array;
  private readonly mask: number;
  // Each side keeps its own position and never trusts the copy in shared
  // memory, which the peer could overwrite.
  private writePos: number;
  private readPos: number;

  /** Allocates a ring with a data area of `dataBytes` (a power of two). */
  static create(dataBytes: number, generation = 0): Ring {
    if (!isPowerOfTwo(dataBytes) || dataBytes < RING_MIN_BYTES || dataBytes > RING_MAX_BYTES) {
      throw new RingError("size", `ring size ${dataBytes} is not a power of two in [${RING_MIN_BYTES}, ${RING_MAX_BYTES}]`);
    }
    if (!Number.isInteger(generation) || generation < 0 || generation > 0x7fffffff) {
      throw new RingError("bad-buffer", `generation ${generation} is not an int32 >= 0`);
    }
    const sab = new SharedArrayBuffer(RING_HEADER_BYTES + dataBytes);
    const header = new Int32Array(sab, 0, RING_HEADER_BYTES / 4);
    header[CAPACITY] = dataBytes;
    header[GENERATION] = generation;
    header[VERSION] = RING_VERSION;
    header[READER_ASLEEP] = 1;
    // The magic goes last: a buffer with the magic is a complete header.
    Atomics.store(header, MAGIC, RING_MAGIC);
    return new Ring(sab);
  }

  /** Attaches to a ring made by `Ring.create`, possibly in another thread. */
  constructor(sab: SharedArrayBuffer) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < RING_HEADER_BYTES + RING_MIN_BYTES) {
      throw new RingError("bad-buffer", "not a SharedArrayBuffer large enough to hold a ring");
    }
    const header = new Int32Array(sab, 0, RING_HEADER_BYTES / 4);
    if (Atomics.load(header, MAGIC) !== RING_MAGIC) throw new RingError("bad-buffer", "no ring header (bad magic)");
    const version = Atomics.load(header, VERSION);
    if (version !== RING_VERSION) throw new RingError("version", `ring format version ${version}, expected ${RING_VERSION}`);
    const capacity = Atomics.load(header, CAPACITY);
    if (!isPowerOfTwo(capacity) || capacity < RING_MIN_BYTES || RING_HEADER_BYTES + capacity !== sab.byteLength) {
      throw new RingError("size", `ring header says ${capacity} data bytes, buffer holds ${sab.byteLength - RING_HEADER_BYTES}`);
    }
    this.buffer = sab;
    this.header = header;
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.maxMessageBytes = capacity / 2 - 4;
    this.generation = Atomics.load(header, GENERATION);
    this.data = new Uint8Array(sab, RING_HEADER_BYTES, capacity);
    this.words = new Uint32Array(sab, RING_HEADER_BYTES, capacity / 4);
    this.writePos = Atomics.load(header, WRITE) >>> 0;
    this.readPos = Atomics.load(header, READ) >>> 0;
  }

  get revoked(): boolean {
    return Atomics.load(this.header, REVOKED) !== 0;
  }

  /**
   * Gathers `parts` into one message. Returns false when the ring lacks room
   * or is revoked; never blocks and never overwrites unread data.
   */
  write(parts: readonly Uint8Array[]): boolean {
    let length = 0;
    for (const part of parts) length += part.byteLength;
    if (length > this.maxMessageBytes) {
      throw new RingError("too-large", `message of ${length} bytes exceeds the ring's limit of ${this.maxMessageBytes}`);
    }
    if (this.revoked) return false;
    const used = (this.writePos - (Atomics.load(this.header, READ) >>> 0)) >>> 0;
    if (used > this.capacity || (used & 3) !== 0) {
      throw new RingError("corrupt", `read index is ${used} bytes behind the write index (capacity ${this.capacity})`);
    }
    const size = 4 + ((length + 3) & ~3);
    let offset = this.writePos & this.mask;
    const tail = this.capacity - offset;
    const skip = size > tail ? tail : 0;
    if (skip + size > this.capacity - used) return false;
    if (skip !== 0) {
      this.words[offset >>> 2] = WRAP;
      offset = 0;
    }
    this.words[offset >>> 2] = length;
    let at = offset + 4;
    for (const part of parts) {
      this.data.set(part, at);
      at += part.byteLength;
    }
    this.writePos = (this.writePos + skip + size) >>> 0;
    // The atomic store orders the plain data writes above before it.
    Atomics.store(this.header, WRITE, this.writePos | 0);
    return true;
  }

  /**
   * Takes the next message, as a copy that the caller owns. Returns
   * undefined when the ring is empty or revoked (unread data is dropped).
   */
  read(): Uint8Array | undefined {
    const at = this.next();
    if (!at) return undefined;
    // slice copies into a fresh (non-shared) buffer.
    const message = this.data.slice(at.offset + 4, at.offset + 4 + at.length);
    this.consumed(at.size);
    return message;
  }

  /**
   * Hands the next message to `use` as a view into the ring, without a
   * copy, and consumes it when `use` returns (or throws). The view is
   * valid only during the call: the writer reuses the space afterwards.
   * During the call the bytes do not change: the writer only writes free
   * space, and the record is not freed until `use` returns (the writer is
   * the peer task's worker, our own code; no guest can reach a ring).
   * Returns false when the ring is empty or revoked.
   */
  readBorrowed(use: (message: Uint8Array) => void): boolean {
    const at = this.next();
    if (!at) return false;
    try {
      use(this.data.subarray(at.offset + 4, at.offset + 4 + at.length));
    } finally {
      this.consumed(at.size);
    }
    return true;
  }

  /** Finds and checks the next record (consuming a wrap marker before it). */
  private next(): { offset: number; length: number; size: number } | undefined {
    if (this.revoked) return undefined;
    let avail = ((Atomics.load(this.header, WRITE) >>> 0) - this.readPos) >>> 0;
    if (avail > this.capacity || (avail & 3) !== 0) {
      throw this.corrupt(`write index is ${avail} bytes ahead of the read index (capacity ${this.capacity})`);
    }
    if (avail === 0) return undefined;
    let offset = this.readPos & this.mask;
    let length = this.words[offset >>> 2];
    if (length === WRAP) {
      // A marker at offset 0 would skip a whole ring; the writer never makes one.
      const skip = this.capacity - offset;
      if (offset === 0 || skip > avail) throw this.corrupt(`wrap marker at ${offset} skips past the write index`);
      this.consumed(skip);
      avail -= skip;
      if (avail === 0) return undefined;
      offset = 0;
      length = this.words[0];
    }
    if (length > this.maxMessageBytes) throw this.corrupt(`length word ${length} at ${offset} exceeds the message limit`);
    const size = 4 + ((length + 3) & ~3);
    if (size > avail) throw this.corrupt(`record of ${size} bytes at ${offset} runs past the write index`);
    if (size > this.capacity - offset) throw this.corrupt(`record of ${size} bytes at ${offset} runs past the data area`);
    return { offset, length, size };
  }

  /** Bytes written and not yet read (framing included), from the shared indices: for any observer. */
  bytesUnread(): number {
    const used = ((Atomics.load(this.header, WRITE) >>> 0) - (Atomics.load(this.header, READ) >>> 0)) >>> 0;
    return used > this.capacity ? this.capacity : used;
  }

  /** Unused bytes of the data area (framing included), from the shared indices: for any observer. */
  bytesFree(): number {
    return this.capacity - this.bytesUnread();
  }

  /** Whether the writer could write a message of `length` payload bytes now. */
  fits(length: number): boolean {
    const used = (this.writePos - (Atomics.load(this.header, READ) >>> 0)) >>> 0;
    if (length > this.maxMessageBytes || used > this.capacity) return false;
    const size = 4 + ((length + 3) & ~3);
    const tail = this.capacity - (this.writePos & this.mask);
    return (size > tail ? tail : 0) + size <= this.capacity - used;
  }

  private consumed(bytes: number): void {
    this.readPos = (this.readPos + bytes) >>> 0;
    Atomics.store(this.header, READ, this.readPos | 0);
    // Load after the store: a writer that sets the flag and then loads READ
    // either sees this store or is seen here (both are sequentially consistent).
    if (Atomics.load(this.header, SPACE_WANTED) !== 0) Atomics.notify(this.header, READ);
  }

  // The doorbell and space wake-ups: the writer rings after publishing, the
  // reader after consuming. Waiters use Atomics.waitAsync so that a worker's
  // event loop keeps running while it waits.

  doorbell(): number {
    return Atomics.load(this.header, DOORBELL);
  }

  /**
   * Bumps the doorbell after publishing, and wakes the reader if it may be
   * asleep (or `always`). Sequentially consistent: a reader that marks
   * itself asleep and then looks at the write index either sees this
   * message or is woken.
   */
  ringDoorbell(always = false): void {
    Atomics.add(this.header, DOORBELL, 1);
    if (always || Atomics.load(this.header, READER_ASLEEP) !== 0) Atomics.notify(this.header, DOORBELL);
  }

  /**
   * The reader says whether it will look at the ring again by itself
   * (awake) or needs the doorbell's wake-up (asleep). After marking itself
   * asleep it must look once more: a message published just before may have
   * skipped the wake-up.
   */
  setReaderAwake(awake: boolean): void {
    Atomics.store(this.header, READER_ASLEEP, awake ? 0 : 1);
  }

  /** Resolves when the doorbell moves from `seen`; undefined if it already has. */
  waitDoorbell(seen: number): Promise<unknown> | undefined {
    const w = waitAsync(this.header, DOORBELL, seen);
    return w.async ? w.value : undefined;
  }

  /**
   * Resolves true once a message of `length` payload bytes fits, false if
   * it never can or the ring is revoked. For the writer only.
   */
  async whenFits(length: number, stop: () => boolean = () => false): Promise<boolean> {
    Atomics.add(this.header, SPACE_WANTED, 1);
    try {
      for (;;) {
        if (this.revoked || stop() || length > this.maxMessageBytes) return false;
        const seen = Atomics.load(this.header, READ);
        if (this.fits(length)) return true;
        const w = waitAsync(this.header, READ, seen);
        if (w.async) await w.value;
      }
    } finally {
      // Only the writer lowers the count: a reader that cleared it could race
      // with a writer about to sleep and leave it asleep.
      Atomics.sub(this.header, SPACE_WANTED, 1);
    }
  }

  /** Wakes the writer's pending waits for space, so that they re-check their stop condition. */
  wakeWriter(): void {
    Atomics.notify(this.header, READ);
  }

  /** Sets the revoked flag and wakes both sides; unread data is dropped. */
  revoke(): void {
    Atomics.store(this.header, REVOKED, 1);
    this.ringDoorbell(true);
    this.wakeWriter();
  }

  private corrupt(detail: string): RingError {
    return new RingError("corrupt", `ring (generation ${this.generation}) is corrupt: ${detail}`);
  }
}
