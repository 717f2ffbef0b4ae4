// A virtio request as the adapter hands it over, built from plain bytes:
// lets the front end be tested without an emulator.
import type { VirtioDevice, VirtioRequest } from "../../../dist/hypervisor/v86/adapter.js";

export class FakeRequest implements VirtioRequest {
  readonly readableBytes: number;
  readonly writableBytes: number;
  readonly written: number[] = [];
  status: number | undefined;
  private readAt = 0;

  constructor(
    private readonly readable: Uint8Array,
    writable: number,
    readonly fault: string | null = null,
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
    const n = Math.min(src.length, this.writableBytes - 1 - this.written.length);
    this.written.push(...src.subarray(0, n));
    return n;
  }

  writeLastByte(value: number): void {
    this.status = value;
  }
}

/** A virtio-blk request: 16-byte header, then data for a write. */
export function blkRequest(type: number, sector: number, opts: { data?: Uint8Array; readLength?: number; fault?: string } = {}): FakeRequest {
  const header = new Uint8Array(16);
  const v = new DataView(header.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector % 2 ** 32, true);
  v.setUint32(12, Math.floor(sector / 2 ** 32), true);
  const readable = opts.data ? Buffer.concat([header, opts.data]) : header;
  return new FakeRequest(readable, (opts.readLength ?? 0) + 1, opts.fault ?? null);
}

export class FakeDevice implements VirtioDevice {
  readonly queue: FakeRequest[] = [];
  readonly completed: FakeRequest[] = [];
  pop(): VirtioRequest | undefined {
    return this.queue.shift();
  }
  complete(_q: number, r: VirtioRequest): void {
    this.completed.push(r as FakeRequest);
  }
  queueReady(): boolean {
    return true;
  }
  getState(): unknown {
    return [];
  }
  setState(): void {}
}
