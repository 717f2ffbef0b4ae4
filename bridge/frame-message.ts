// Ethernet frames as they cross a channel between the app VM's virtio-net
// front end and the net VM's back end. The receiver decodes each message
// here, once; the decoder returns a frame or a typed reason and never throws.
//
// Message: u8 version, u8 kind (1 = frame), u16 length (little-endian),
//          then `length` bytes: one Ethernet frame without its FCS.

export const FRAME_MESSAGE_VERSION = 1;
export const FRAME_HEADER_BYTES = 4;
/** Destination, source and ethertype. */
export const MIN_FRAME = 14;
/** A 1500-byte MTU frame: both ends offer no segmentation offloads. */
export const MAX_FRAME = 1514;
const KIND_FRAME = 1;

export type FrameInvalidCode = "short" | "version" | "kind" | "length-mismatch" | "runt" | "oversized";

export interface FrameInvalid {
  kind: "invalid";
  code: FrameInvalidCode;
  detail: string;
}

/** Why a frame is unfit for the wire, or null when it is fine. */
export function frameProblem(length: number): "runt" | "oversized" | null {
  if (length < MIN_FRAME) return "runt";
  if (length > MAX_FRAME) return "oversized";
  return null;
}

/** Header and frame as two parts, so a send copies the frame only into the ring. */
export function encodeFrame(frame: Uint8Array): Uint8Array[] {
  const problem = frameProblem(frame.length);
  if (problem) throw new RangeError(`refusing to encode a ${problem} frame of ${frame.length} bytes`);
  const header = Uint8Array.of(FRAME_MESSAGE_VERSION, KIND_FRAME, frame.length & 0xff, frame.length >> 8);
  return [header, frame];
}

/** The frame inside a message (a view, not a copy), or why the message is bad. */
export function decodeFrame(bytes: Uint8Array): Uint8Array | FrameInvalid {
  const bad = (code: FrameInvalidCode, detail: string): FrameInvalid => ({ kind: "invalid", code, detail });
  if (bytes.length < FRAME_HEADER_BYTES) return bad("short", `${bytes.length}-byte message`);
  if (bytes[0] !== FRAME_MESSAGE_VERSION) return bad("version", `version ${bytes[0]}`);
  if (bytes[1] !== KIND_FRAME) return bad("kind", `kind ${bytes[1]}`);
  const length = bytes[2] | (bytes[3] << 8);
  if (length !== bytes.length - FRAME_HEADER_BYTES) return bad("length-mismatch", `header says ${length}, message carries ${bytes.length - FRAME_HEADER_BYTES}`);
  const problem = frameProblem(length);
  if (problem) return bad(problem, `${length}-byte frame`);
  return bytes.subarray(FRAME_HEADER_BYTES);
}

/**
 * A channel's message handler for frames: each good frame goes to `onFrame`;
 * each bad message to `onMalformed` with its running count, so the caller
 * can count every one and report only some.
 */
export function frameHandler(onFrame: (frame: Uint8Array) => void, onMalformed: (bad: FrameInvalid, count: number) => void): (message: Uint8Array) => void {
  let malformed = 0;
  return (message) => {
    const frame = decodeFrame(message);
    if ("code" in frame) onMalformed(frame, ++malformed);
    else onFrame(frame);
  };
}
