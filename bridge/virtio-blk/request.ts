// Parser of the app VM's virtio-blk requests. The guest's driver is
// untrusted: every way a request can be wrong has its own error code, and
// nothing behind this parser sees an unchecked request.
import type { VirtioRequest } from "../../hypervisor/v86/adapter.js";

export const SECTOR = 512;
/** Largest data transfer per request: what the device advertises (seg_max x size_max). */
export const MAX_TRANSFER = 256 * 1024;

export const VIRTIO_BLK_T = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11 } as const;
export const VIRTIO_BLK_S = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

export type BlockOp = "read" | "write" | "flush" | "get-id";

export interface ParsedRequest {
  op: BlockOp;
  sector: number;
  /** Data bytes: read into the guest, written from it; 0 for flush. */
  length: number;
  /** For a write: the data, read out of the guest's buffers. */
  data?: Uint8Array;
}

export type RequestErrorCode =
  | "bad-chain" // a buffer outside guest memory or over 4 GiB
  | "short-header" // fewer than 16 readable bytes
  | "no-status" // no writable byte for the status
  | "unsupported" // a request type we do not serve
  | "unaligned" // data length not a multiple of 512, or zero
  | "too-large" // more than MAX_TRANSFER
  | "out-of-range"; // past the end of the disk

export interface RequestError {
  code: RequestErrorCode;
  detail: string;
  /** The status the guest gets back. */
  status: number;
}

const fail = (code: RequestErrorCode, detail: string, status: number = VIRTIO_BLK_S.IOERR): RequestError => ({ code, detail, status });

export function isRequestError(r: ParsedRequest | RequestError): r is RequestError {
  return "code" in r;
}

/** `allocate`: where a write's data is copied to (a fresh buffer by default). */
export function parseRequest(req: VirtioRequest, capacitySectors: number, allocate: (length: number) => Uint8Array = (length) => new Uint8Array(length)): ParsedRequest | RequestError {
  if (req.fault) return fail("bad-chain", req.fault);
  if (req.readableBytes < 16) return fail("short-header", `${req.readableBytes} readable bytes`);
  if (req.writableBytes < 1) return fail("no-status", "no writable status byte");
  const header = new Uint8Array(16);
  req.read(header);
  const view = new DataView(header.buffer);
  const type = view.getUint32(0, true);
  const sector = view.getUint32(8, true) + view.getUint32(12, true) * 2 ** 32;

  const checkRange = (length: number): RequestError | undefined => {
    if (length === 0 || length % SECTOR !== 0) return fail("unaligned", `length ${length} is not a positive multiple of ${SECTOR}`);
    if (length > MAX_TRANSFER) return fail("too-large", `length ${length} exceeds ${MAX_TRANSFER}`);
    if (sector + length / SECTOR > capacitySectors) return fail("out-of-range", `sectors ${sector}+${length / SECTOR} past the end (${capacitySectors})`);
    return undefined;
  };

  switch (type) {
    case VIRTIO_BLK_T.IN: {
      const length = req.writableBytes - 1;
      return checkRange(length) ?? { op: "read", sector, length };
    }
    case VIRTIO_BLK_T.OUT: {
      const length = req.readableBytes - 16;
      const err = checkRange(length);
      if (err) return err;
      const data = allocate(length);
      // A pooled buffer holds an earlier write's bytes: every one must come from this request.
      if (req.read(data) !== length) return fail("bad-chain", `read ${length} data bytes short`);
      return { op: "write", sector, length, data };
    }
    case VIRTIO_BLK_T.FLUSH:
      return { op: "flush", sector: 0, length: 0 };
    case VIRTIO_BLK_T.GET_ID:
      return { op: "get-id", sector: 0, length: Math.min(20, req.writableBytes - 1) };
    default:
      return fail("unsupported", `request type ${type}`, VIRTIO_BLK_S.UNSUPP);
  }
}
