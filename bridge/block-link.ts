// The block service on the wire: the front end's and back end's request and
// reply values, carried as block messages (bridge/block-message.ts).
import type { BackendRequest, BackendResponse } from "./virtio-blk/device.js";
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse, type BlockInvalid } from "./block-message.js";

export function encodeBlockRequest(req: BackendRequest): Uint8Array[] {
  if (req.op === "write") return encodeRequest({ kind: "request", op: "write", id: req.id, sector: req.sector, length: req.length, payload: req.data ?? new Uint8Array(0) });
  return encodeRequest({ kind: "request", op: req.op, id: req.id, sector: req.sector, length: req.length });
}

export function decodeBlockRequest(bytes: Uint8Array): BackendRequest | BlockInvalid {
  const r = decodeRequest(bytes);
  if (r.kind === "invalid") return r;
  if (r.op === "discard") return { kind: "invalid", code: "op", detail: "discard is not served" };
  return r.op === "write" ? { id: r.id, op: "write", sector: r.sector, length: r.length, data: r.payload } : { id: r.id, op: r.op, sector: r.sector, length: r.length };
}

/** `dataParts`: a read's data as parts (views of the back end's guest window), in place of `resp.data`. */
export function encodeBlockResponse(resp: BackendResponse, dataParts?: readonly Uint8Array[]): Uint8Array[] {
  return encodeResponse({
    kind: "response",
    op: resp.op,
    status: resp.ok ? "ok" : "io-error",
    id: resp.id,
    length: resp.op === "flush" ? 0 : resp.length,
    ...(resp.ok && resp.op === "read" ? { payload: dataParts ?? resp.data } : {}),
  });
}

export function decodeBlockResponse(bytes: Uint8Array): BackendResponse | BlockInvalid {
  const r = decodeResponse(bytes);
  if (r.kind === "invalid") return r;
  if (r.op === "discard") return { kind: "invalid", code: "op", detail: "reply to a discard, which is never sent" };
  return { id: r.id, op: r.op, ok: r.status === "ok", length: r.length, data: r.payload };
}
