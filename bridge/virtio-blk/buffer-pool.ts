// Buffers for the data of the app VM's writes, used again once a write is
// done. The front end copies a write's data out of the guest (the guest may
// change its buffers, and a successor disk VM may need the data again), and
// a fresh 64 KiB buffer per write made V8's garbage collector a large share
// of a write-heavy load: its threads took about 76 us per 64 KiB write on
// the two cores the VMs need (docs/benchmarks.md).

/** What the pool keeps at most; anything past it goes to the garbage collector. */
const MAX_POOLED_BYTES = 8 * 2 ** 20;

export class BufferPool {
  private readonly free = new Map<number, Uint8Array[]>();
  private pooledBytes = 0;

  /** A buffer of exactly `length` bytes, with whatever it held before. */
  take(length: number): Uint8Array {
    const buffer = this.free.get(length)?.pop();
    if (!buffer) return new Uint8Array(length);
    this.pooledBytes -= length;
    return buffer;
  }

  /** Gives a buffer back: its owner keeps no reference to it. */
  give(buffer: Uint8Array): void {
    if (this.pooledBytes + buffer.length > MAX_POOLED_BYTES || buffer.byteOffset !== 0 || buffer.length !== buffer.buffer.byteLength) return;
    let list = this.free.get(buffer.length);
    if (!list) this.free.set(buffer.length, (list = []));
    list.push(buffer);
    this.pooledBytes += buffer.length;
  }
}
