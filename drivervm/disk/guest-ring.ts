// The request ring shared with the disk VM's blkback helper: page 0 of the
// helper's pinned window. The layout is mirrored in drivervm/disk/blkback.c.
// Indices are free-running u32; a slot is index % RING_SLOTS.

/**
 * blkback rings the host with `outb` to this port (it gets access with
 * ioperm); 0x6f0 is used by neither v86 nor our kernel.
 * The host rings blkback with a 0x07 byte on its control line.
 */
export const DOORBELL_PORT = 0x6f0;

export const RING = {
  MAGIC: 0x31524b42, // "BKR1"
  OFF_MAGIC: 0,
  OFF_REQ_PROD: 4, // host writes
  OFF_REQ_CONS: 8, // guest writes
  OFF_RESP_PROD: 12, // guest writes
  OFF_RESP_CONS: 16, // host writes
  /** guest writes: 1 while blkback looks for work without sleeping (no doorbell needed). */
  OFF_SPINNING: 20,
  REQ_BASE: 64,
  REQ_SIZE: 32,
  RESP_BASE: 576,
  RESP_SIZE: 16,
  SLOTS: 16,
} as const;

export const WINDOW = {
  PAGE: 4096,
  DATA_BASE: 4096,
  DATA_SLOT_BYTES: 256 * 1024,
  DATA_SLOTS: 8,
  get BYTES(): number {
    return this.DATA_BASE + this.DATA_SLOTS * this.DATA_SLOT_BYTES;
  },
  get PAGES(): number {
    return this.BYTES / this.PAGE;
  },
} as const;

export const RING_OP = { read: 0, write: 1, flush: 2, discard: 3 } as const;
export const RING_STATUS = { OK: 0, IO_ERROR: 1, UNSUPPORTED: 2, INVALID: 3 } as const;

export interface RingRequest {
  id: number;
  op: number;
  dataSlot: number;
  sector: number;
  length: number;
  dataOffset: number;
}

export function encodeRingRequest(r: RingRequest): Uint8Array {
  const b = new Uint8Array(RING.REQ_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, r.id >>> 0, true);
  v.setUint8(4, r.op);
  v.setUint8(5, r.dataSlot);
  v.setUint32(8, r.sector % 2 ** 32, true);
  v.setUint32(12, Math.floor(r.sector / 2 ** 32), true);
  v.setUint32(16, r.length, true);
  v.setUint32(20, r.dataOffset, true);
  return b;
}

export interface RingResponse {
  id: number;
  status: number;
  op: number;
  length: number;
  err: number;
}

export function decodeRingResponse(b: Uint8Array): RingResponse {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { id: v.getUint32(0, true), status: v.getUint8(4), op: v.getUint8(5), length: v.getUint32(8, true), err: v.getUint32(12, true) };
}
