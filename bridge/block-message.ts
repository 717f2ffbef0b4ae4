// Block requests and responses as they cross a channel between the
// virtio-blk front end and the disk VM's back end. Each side decodes what it
// receives here, once; a decoder returns a typed value or a typed error for
// every way the bytes can be wrong and never throws. Integers are
// little-endian. Payloads are passed as separate parts so that
// `send([header, payload])` copies a payload only into the ring.
//
// Request:  u8 version, u8 op, u16 reserved, u32 id, u32 sector lo,
//           u32 sector hi, u32 length, then `length` bytes for a write.
// Response: u8 version, u8 op, u8 status, u8 reserved, u32 id, u32 length,
//           then `length` bytes for a successful read.

export const BLOCK_MESSAGE_VERSION = 1;
export const SECTOR_BYTES = 512;
export const MAX_BLOCK_LENGTH = 1 << 20;
/** Sectors are kept below 2^53 so that they are exact JS numbers. */
export const MAX_SECTOR = Number.MAX_SAFE_INTEGER;
export const REQUEST_HEADER_BYTES = 20;
export const RESPONSE_HEADER_BYTES = 12;

const OPS = ["read", "write", "flush", "discard"] as const;
const STATUSES = ["ok", "io-error", "unsupported"] as const;
export type BlockOp = (typeof OPS)[number];
export type BlockStatus = (typeof STATUSES)[number];

/** A flush has sector 0 and length 0; only a write carries a payload. */
export type BlockRequest =
  | { kind: "request"; op: "read" | "flush" | "discard"; id: number; sector: number; length: number }
  | { kind: "request"; op: "write"; id: number; sector: number; length: number; payload: Uint8Array };

export interface BlockResponse {
  kind: "response";
  op: BlockOp;
  status: BlockStatus;
  id: number;
  length: number;
  /**
   * Present exactly when op is "read" and status is "ok". The sender may
   * give it as parts (say, the pages of a guest buffer), sent as one.
   */
  payload?: Uint8Array | readonly Uint8Array[];
}

/** Bytes in a payload given whole or as parts. */
function payloadBytes(payload: Uint8Array | readonly Uint8Array[]): number {
  if (payload instanceof Uint8Array) return payload.byteLength;
  let n = 0;
  for (const part of payload) n += part.byteLength;
  return n;
}

export type BlockInvalidCode =
  | "short"
  | "version"
  | "op"
  | "reserved"
  | "unaligned"
  | "too-large"
  | "length-mismatch"
  | "status";

export interface BlockInvalid {
  kind: "invalid";
  code: BlockInvalidCode;
  detail: string;
}

/**
 * Thrown by an encoder given a value no decoder would accept: a bug in the
 * caller. "field" is a number that is not an integer in its field's range.
 */
export class BlockMessageError extends Error {
  override readonly name = "BlockMessageError";
  constructor(
    readonly code: BlockInvalidCode | "field",
    readonly detail: string,
  ) {
    super(`cannot encode block message: ${code}: ${detail}`);
  }
}

const invalid = (code: BlockInvalidCode, detail: string): BlockInvalid => ({ kind: "invalid", code, detail });

const view = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

// Rules shared by the decoders and the encoders' self-check.
function checkLength(op: BlockOp, length: number): BlockInvalid | undefined {
  if (op === "flush" && length !== 0) return invalid("length-mismatch", `flush carries length 0, not ${length}`);
  if (length % SECTOR_BYTES !== 0) return invalid("unaligned", `length ${length} is not a multiple of ${SECTOR_BYTES}`);
  if (length > MAX_BLOCK_LENGTH) return invalid("too-large", `length ${length} exceeds ${MAX_BLOCK_LENGTH}`);
  return undefined;
}

function checkSector(op: BlockOp, sector: number): BlockInvalid | undefined {
  if (sector > MAX_SECTOR) return invalid("too-large", `sector ${sector} is not below 2^53`);
  // A flush names no sector: a non-zero one is a reserved field misused.
  if (op === "flush" && sector !== 0) return invalid("reserved", `flush carries sector 0, not ${sector}`);
  return undefined;
}

export function decodeRequest(bytes: Uint8Array): BlockRequest | BlockInvalid {
  if (bytes.byteLength < REQUEST_HEADER_BYTES) {
    return invalid("short", `request of ${bytes.byteLength} bytes, the header alone is ${REQUEST_HEADER_BYTES}`);
  }
  const v = view(bytes);
  const version = v.getUint8(0);
  if (version !== BLOCK_MESSAGE_VERSION) return invalid("version", `request version ${version}, expected ${BLOCK_MESSAGE_VERSION}`);
  const op = OPS[v.getUint8(1)];
  if (op === undefined) return invalid("op", `unknown request op ${v.getUint8(1)}`);
  const reserved = v.getUint16(2, true);
  if (reserved !== 0) return invalid("reserved", `reserved field is ${reserved}`);
  const id = v.getUint32(4, true);
  const sector = v.getUint32(12, true) * 2 ** 32 + v.getUint32(8, true);
  const length = v.getUint32(16, true);
  const bad = checkSector(op, sector) ?? checkLength(op, length);
  if (bad) return bad;
  const payloadBytes = bytes.byteLength - REQUEST_HEADER_BYTES;
  if (op === "write") {
    if (payloadBytes !== length) return invalid("length-mismatch", `write of length ${length} carries ${payloadBytes} bytes`);
    // A view, not a copy: the message is already the receiver's own copy.
    return { kind: "request", op, id, sector, length, payload: bytes.subarray(REQUEST_HEADER_BYTES) };
  }
  if (payloadBytes !== 0) return invalid("length-mismatch", `${op} request carries ${payloadBytes} payload bytes`);
  return { kind: "request", op, id, sector, length };
}

/** A decoded response's payload is one view of the message. */
export function decodeResponse(bytes: Uint8Array): (BlockResponse & { payload?: Uint8Array }) | BlockInvalid {
  if (bytes.byteLength < RESPONSE_HEADER_BYTES) {
    return invalid("short", `response of ${bytes.byteLength} bytes, the header alone is ${RESPONSE_HEADER_BYTES}`);
  }
  const v = view(bytes);
  const version = v.getUint8(0);
  if (version !== BLOCK_MESSAGE_VERSION) return invalid("version", `response version ${version}, expected ${BLOCK_MESSAGE_VERSION}`);
  const op = OPS[v.getUint8(1)];
  if (op === undefined) return invalid("op", `unknown response op ${v.getUint8(1)}`);
  const status = STATUSES[v.getUint8(2)];
  if (status === undefined) return invalid("status", `unknown response status ${v.getUint8(2)}`);
  if (v.getUint8(3) !== 0) return invalid("reserved", `reserved field is ${v.getUint8(3)}`);
  const id = v.getUint32(4, true);
  const length = v.getUint32(8, true);
  const bad = checkLength(op, length);
  if (bad) return bad;
  const payloadBytes = bytes.byteLength - RESPONSE_HEADER_BYTES;
  if (op === "read" && status === "ok") {
    if (payloadBytes !== length) return invalid("length-mismatch", `read reply of length ${length} carries ${payloadBytes} bytes`);
    return { kind: "response", op, status, id, length, payload: bytes.subarray(RESPONSE_HEADER_BYTES) };
  }
  if (payloadBytes !== 0) return invalid("length-mismatch", `${op} ${status} reply carries ${payloadBytes} payload bytes`);
  return { kind: "response", op, status, id, length };
}

function checkFields(fields: Record<string, number>): BlockInvalid | undefined {
  for (const [name, value] of Object.entries(fields)) {
    const max = name === "sector" ? MAX_SECTOR : 0xffffffff;
    if (!Number.isInteger(value) || value < 0 || value > max) return { kind: "invalid", code: "too-large", detail: `${name} ${value}` };
  }
  return undefined;
}

function assertEncodable(bad: BlockInvalid | undefined, fieldError: BlockInvalid | undefined): void {
  if (fieldError) throw new BlockMessageError("field", `${fieldError.detail} is not an integer in its field's range`);
  if (bad) throw new BlockMessageError(bad.code, bad.detail);
}

/** The fixed 20-byte request header; a write's payload goes as a separate part. */
export function encodeRequestHeader(req: BlockRequest): Uint8Array {
  const fieldError = checkFields({ id: req.id, sector: req.sector, length: req.length });
  assertEncodable(
    fieldError ??
      checkSector(req.op, req.sector) ??
      checkLength(req.op, req.length) ??
      (req.op === "write" && req.payload.byteLength !== req.length
        ? invalid("length-mismatch", `write of length ${req.length} given ${req.payload.byteLength} bytes`)
        : undefined),
    fieldError,
  );
  const header = new Uint8Array(REQUEST_HEADER_BYTES);
  const v = view(header);
  v.setUint8(0, BLOCK_MESSAGE_VERSION);
  v.setUint8(1, OPS.indexOf(req.op));
  v.setUint32(4, req.id, true);
  v.setUint32(8, req.sector % 2 ** 32, true);
  v.setUint32(12, Math.floor(req.sector / 2 ** 32), true);
  v.setUint32(16, req.length, true);
  return header;
}

/** The parts of a request, ready for `ChannelEndpoint.send`. */
export function encodeRequest(req: BlockRequest): Uint8Array[] {
  const header = encodeRequestHeader(req);
  return req.op === "write" ? [header, req.payload] : [header];
}

/** The fixed 12-byte response header; a read's payload goes as a separate part. */
export function encodeResponseHeader(res: BlockResponse): Uint8Array {
  const withPayload = res.op === "read" && res.status === "ok";
  const given = res.payload === undefined ? undefined : payloadBytes(res.payload);
  const fieldError = checkFields({ id: res.id, length: res.length });
  assertEncodable(
    fieldError ??
      checkLength(res.op, res.length) ??
      (withPayload && given !== res.length
        ? invalid("length-mismatch", `read reply of length ${res.length} given ${given ?? "no"} payload bytes`)
        : undefined) ??
      (!withPayload && given !== undefined ? invalid("length-mismatch", `${res.op} ${res.status} reply given a payload`) : undefined),
    fieldError,
  );
  const header = new Uint8Array(RESPONSE_HEADER_BYTES);
  const v = view(header);
  v.setUint8(0, BLOCK_MESSAGE_VERSION);
  v.setUint8(1, OPS.indexOf(res.op));
  v.setUint8(2, STATUSES.indexOf(res.status));
  v.setUint32(4, res.id, true);
  v.setUint32(8, res.length, true);
  return header;
}

/** The parts of a response, ready for `ChannelEndpoint.send`. */
export function encodeResponse(res: BlockResponse): Uint8Array[] {
  const header = encodeResponseHeader(res);
  if (res.payload === undefined) return [header];
  return res.payload instanceof Uint8Array ? [header, res.payload] : [header, ...res.payload];
}
