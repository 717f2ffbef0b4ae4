// A virtio split virtqueue (virtio 1.x, section 2.7), walked straight in the
// guest's RAM. v86 keeps the queue's registers (addresses, size, the next
// avail index) and the PCI plumbing; taking requests and handing them back
// is done here, with plain typed-array reads instead of v86's one call into
// its wasm per field, and with every guest-written field checked: the
// descriptor table and the avail ring belong to an untrusted driver.
//
// A chain that cannot be used (an index past the table, a loop, a buffer
// outside RAM, an indirect table we never offered) is still handed out, with
// its `fault` set and no buffers: the device answers it as broken and gives
// it back, so the driver gets its descriptors back and nothing else is
// touched.

/** The guest's RAM as the device sees it (DMA). */
export interface GuestRam {
  /** The whole RAM; fetched per use, never kept across guest slices. */
  bytes(): Uint8Array;
  /** The device wrote [start, end): compiled guest code on those pages is stale. */
  written(start: number, end: number): void;
}

/** Where the driver put the queue (its PCI registers), and the device's own avail index. */
export interface QueueRegisters {
  readonly size: number;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  /** The next avail ring entry to take (16-bit, free running). */
  lastAvail: number;
}

/** One buffer of a chain: a stretch of guest RAM, known to be inside it. */
interface Segment {
  addr: number;
  len: number;
}

const DESC_BYTES = 16;
const F_NEXT = 1;
const F_WRITE = 2;
const F_INDIRECT = 4;
/** avail.flags: the driver asks for no interrupt. */
const AVAIL_F_NO_INTERRUPT = 1;

function u16(m: Uint8Array, at: number): number {
  return m[at]! | (m[at + 1]! << 8);
}
function u32(m: Uint8Array, at: number): number {
  return (m[at]! | (m[at + 1]! << 8) | (m[at + 2]! << 16) | (m[at + 3]! << 24)) >>> 0;
}
function put16(m: Uint8Array, at: number, v: number): void {
  m[at] = v & 0xff;
  m[at + 1] = (v >>> 8) & 0xff;
}
function put32(m: Uint8Array, at: number, v: number): void {
  m[at] = v & 0xff;
  m[at + 1] = (v >>> 8) & 0xff;
  m[at + 2] = (v >>> 16) & 0xff;
  m[at + 3] = (v >>> 24) & 0xff;
}

/** A place in a list of segments, moved forward as bytes are copied. */
class Cursor {
  private seg = 0;
  private off = 0;

  constructor(private readonly segments: readonly Segment[]) {}

  /** Visits the next stretches of guest RAM, `bytes` at most in all, in order; returns how many bytes. */
  advance(bytes: number, visit: (addr: number, n: number, done: number) => void): number {
    let done = 0;
    while (done < bytes && this.seg < this.segments.length) {
      const s = this.segments[this.seg]!;
      const n = Math.min(s.len - this.off, bytes - done);
      visit(s.addr + this.off, n, done);
      done += n;
      this.off += n;
      if (this.off === s.len) this.seg++, (this.off = 0);
    }
    return done;
  }
}

/** A request of the driver: its descriptor chain, read once and checked. */
export class DescriptorChain {
  readonly readableBytes: number;
  readonly writableBytes: number;
  /** Bytes the device wrote, reported in the used ring. */
  written = 0;
  private readonly reader: Cursor;
  private readonly writer: Cursor;

  constructor(
    private readonly ram: GuestRam,
    readonly head: number,
    readable: Segment[],
    private readonly writable: Segment[],
    /** Why the chain is unusable, or null. */
    readonly fault: string | null,
  ) {
    this.readableBytes = readable.reduce((n, s) => n + s.len, 0);
    this.writableBytes = writable.reduce((n, s) => n + s.len, 0);
    this.reader = new Cursor(readable);
    this.writer = new Cursor(writable);
  }

  /** Reads the next bytes the driver gave us, in order; returns how many. */
  read(dest: Uint8Array): number {
    const m = this.ram.bytes();
    return this.reader.advance(dest.length, (at, n, done) => dest.set(m.subarray(at, at + n), done));
  }

  /** Writes the next bytes into the driver's writable buffers, in order; returns how many. */
  write(src: Uint8Array): number {
    const m = this.ram.bytes();
    const done = this.writer.advance(src.length, (at, n, from) => {
      this.ram.written(at, at + n);
      m.set(src.subarray(from, from + n), at);
    });
    this.written += done;
    return done;
  }

  /** Writes one byte at the very end of the writable buffers (virtio-blk's status byte). */
  writeLastByte(value: number): void {
    const last = this.writable[this.writable.length - 1];
    if (!last || last.len < 1) return;
    const at = last.addr + last.len - 1;
    this.ram.written(at, at + 1);
    this.ram.bytes()[at] = value & 0xff;
    this.written += 1;
  }
}

/** Why a queue's own layout is unusable (it lies outside RAM), or null. */
function layoutFault(q: QueueRegisters, ramBytes: number): string | null {
  const size = q.size;
  if (size === 0 || size > 32768 || (size & (size - 1)) !== 0) return `queue size ${size}`;
  const parts: Array<[string, number, number]> = [
    ["descriptor table", q.desc, DESC_BYTES * size],
    ["avail ring", q.avail, 6 + 2 * size],
    ["used ring", q.used, 6 + 8 * size],
  ];
  for (const [what, at, bytes] of parts) {
    if (!Number.isInteger(at) || at < 0 || at + bytes > ramBytes) return `${what} at 0x${at.toString(16)} outside guest RAM`;
  }
  return null;
}

/**
 * Takes the driver's next request, or undefined when there is none, the
 * queue lies outside RAM, or its avail index claims more requests than the
 * queue holds (a broken ring: nothing is taken from it).
 */
export function popChain(ram: GuestRam, q: QueueRegisters): DescriptorChain | undefined {
  const m = ram.bytes();
  if (layoutFault(q, m.length)) return undefined;
  const pending = (u16(m, q.avail + 2) - q.lastAvail) & 0xffff;
  if (pending === 0 || pending > q.size) return undefined;
  const head = u16(m, q.avail + 4 + 2 * (q.lastAvail & (q.size - 1)));
  q.lastAvail = (q.lastAvail + 1) & 0xffff;
  return walk(ram, m, q, head);
}

function walk(ram: GuestRam, m: Uint8Array, q: QueueRegisters, head: number): DescriptorChain {
  const readable: Segment[] = [];
  const writable: Segment[] = [];
  const broken = (why: string) => new DescriptorChain(ram, head, [], [], why);
  let index = head;
  for (let seen = 0; ; seen++) {
    if (index >= q.size) return broken(`descriptor ${index} past the table (${q.size})`);
    if (seen === q.size) return broken("descriptor chain loops");
    const d = q.desc + DESC_BYTES * index;
    const addr = u32(m, d);
    const high = u32(m, d + 4);
    const len = u32(m, d + 8);
    const flags = u16(m, d + 12);
    if (flags & F_INDIRECT) return broken("indirect descriptor (not offered)");
    if (high !== 0) return broken(`buffer above 4 GiB (0x${high.toString(16)}:${addr.toString(16)})`);
    if (addr + len > m.length) return broken(`buffer 0x${addr.toString(16)}+${len} outside guest memory`);
    if (flags & F_WRITE) writable.push({ addr, len });
    else if (writable.length > 0) return broken("readable buffer after a writable one");
    else readable.push({ addr, len });
    if (!(flags & F_NEXT)) break;
    index = u16(m, d + 14);
  }
  return new DescriptorChain(ram, head, readable, writable, null);
}

/**
 * Hands chains back to the driver: their used ring entries, then the used
 * index (so the driver never sees an entry before it is filled). Returns
 * whether the driver wants an interrupt for them.
 */
export function pushUsed(ram: GuestRam, q: QueueRegisters, chains: readonly DescriptorChain[]): boolean {
  const m = ram.bytes();
  if (chains.length === 0 || layoutFault(q, m.length)) return false;
  let idx = u16(m, q.used + 2);
  for (const c of chains) {
    const e = q.used + 4 + 8 * (idx & (q.size - 1));
    put32(m, e, c.head);
    put32(m, e + 4, c.written);
    idx = (idx + 1) & 0xffff;
  }
  ram.written(q.used, q.used + 4 + 8 * q.size);
  put16(m, q.used + 2, idx);
  return (u16(m, q.avail) & AVAIL_F_NO_INTERRUPT) === 0;
}
