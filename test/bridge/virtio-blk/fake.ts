// virtio-blk requests for the front end's tests, on the shared fakes.
import { FakeRequest } from "../fake-virtio.js";

export { FakeDevice, FakeRequest } from "../fake-virtio.js";

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
