// Virtio requests and a device as the adapter hands them over, built from
// plain bytes: lets the front ends be tested without an emulator.
import type { VirtioDevice, VirtioRequest } from "../../dist/hypervisor/v86/adapter.js";

export class FakeRequest implements VirtioRequest {
  readonly readableBytes: number;
  readonly writableBytes: number;
  readonly written: number[] = [];
  status: number | undefined;
  private readAt = 0;

  /** `statusByte`: the last writable byte is virtio-blk's status, which write() leaves alone. */
  constructor(
    private readonly readable: Uint8Array,
    writable: number,
    readonly fault: string | null = null,
    private readonly statusByte = true,
  ) {
    this.readableBytes = readable.length;
    this.writableBytes = writable;
  }

  read(dest: Uint8Array): number {
    const n = Math.min(dest.length, this.readable.length - this.readAt);
    dest.set(this.readable.subarray(this.readAt, this.readAt + n));
    this.readAt += n;
    return n;
  }

  write(src: Uint8Array): number {
    const n = Math.min(src.length, this.writableBytes - (this.statusByte ? 1 : 0) - this.written.length);
    this.written.push(...src.subarray(0, n));
    return n;
  }

  writeLastByte(value: number): void {
    this.status = value;
  }
}

export class FakeDevice implements VirtioDevice {
  readonly queue: FakeRequest[] = [];
  readonly completed: FakeRequest[] = [];
  private readonly popped: FakeRequest[] = [];
  pop(): VirtioRequest | undefined {
    const r = this.queue.shift();
    if (r) this.popped.push(r);
    return r;
  }
  giveBack(_q: number, count: number): void {
    if (count > 0) this.queue.unshift(...this.popped.splice(-count));
  }
  complete(_q: number, r: VirtioRequest): void {
    this.completed.push(r as FakeRequest);
  }
  completeAll(q: number, rs: readonly VirtioRequest[]): void {
    for (const r of rs) this.complete(q, r);
  }
  accepted(): boolean {
    return true;
  }
  queueSize(): number {
    return 128;
  }
  queueReady(): boolean {
    return true;
  }
  getState(): unknown {
    return [];
  }
  setState(): void {}
}
