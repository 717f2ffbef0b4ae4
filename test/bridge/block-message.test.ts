import { describe, expect, it } from "vitest";
import {
  BlockMessageError,
  MAX_BLOCK_LENGTH,
  REQUEST_HEADER_BYTES,
  RESPONSE_HEADER_BYTES,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeRequestHeader,
  encodeResponse,
  encodeResponseHeader,
  type BlockRequest,
  type BlockResponse,
} from "../../dist/bridge/block-message.js";
import { prng } from "./fixtures/prng.mjs";

const join = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
};

/** A request header with raw field values, to craft what an encoder would refuse. */
function rawRequest(f: { version?: number; op?: number; reserved?: number; id?: number; lo?: number; hi?: number; length?: number }, payload = 0): Uint8Array {
  const out = new Uint8Array(REQUEST_HEADER_BYTES + payload);
  const v = new DataView(out.buffer);
  v.setUint8(0, f.version ?? 1);
  v.setUint8(1, f.op ?? 0);
  v.setUint16(2, f.reserved ?? 0, true);
  v.setUint32(4, f.id ?? 1, true);
  v.setUint32(8, f.lo ?? 0, true);
  v.setUint32(12, f.hi ?? 0, true);
  v.setUint32(16, f.length ?? 512, true);
  return out;
}

function rawResponse(f: { version?: number; op?: number; status?: number; reserved?: number; id?: number; length?: number }, payload = 0): Uint8Array {
  const out = new Uint8Array(RESPONSE_HEADER_BYTES + payload);
  const v = new DataView(out.buffer);
  v.setUint8(0, f.version ?? 1);
  v.setUint8(1, f.op ?? 1);
  v.setUint8(2, f.status ?? 0);
  v.setUint8(3, f.reserved ?? 0);
  v.setUint32(4, f.id ?? 1, true);
  v.setUint32(8, f.length ?? 512, true);
  return out;
}

// Much faster than toEqual on large byte arrays.
const sameBytes = (x: Uint8Array, y: Uint8Array): boolean =>
  Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));

/** Compares a decoded value with the expected one, payloads byte for byte. */
function expectSame(got: object, want: BlockRequest | BlockResponse): void {
  const { payload: gotPayload, ...gotRest } = got as { payload?: Uint8Array };
  const { payload: wantPayload, ...wantRest } = want as { payload?: Uint8Array };
  expect(gotRest).toEqual(wantRest);
  expect(gotPayload === undefined).toBe(wantPayload === undefined);
  if (gotPayload && wantPayload) expect(sameBytes(gotPayload, wantPayload)).toBe(true);
}

const payload = (n: number): Uint8Array => prng(n).bytes(n);

describe("block requests", () => {
  const requests: BlockRequest[] = [
    { kind: "request", op: "read", id: 1, sector: 0, length: 4096 },
    { kind: "request", op: "write", id: 2, sector: 2 ** 40 + 7, length: 1024, payload: payload(1024) },
    { kind: "request", op: "write", id: 0xffffffff, sector: Number.MAX_SAFE_INTEGER, length: MAX_BLOCK_LENGTH, payload: payload(MAX_BLOCK_LENGTH) },
    { kind: "request", op: "flush", id: 3, sector: 0, length: 0 },
    { kind: "request", op: "discard", id: 4, sector: 123_456, length: 65_536 },
  ];

  it.each(requests.map((r) => [`${r.op} of ${r.length} bytes at sector ${r.sector}`, r] as const))("round-trips a %s", (_name, req) => {
    const parts = encodeRequest(req);
    expect(parts[0]).toEqual(encodeRequestHeader(req));
    expect(parts[0].byteLength).toBe(REQUEST_HEADER_BYTES);
    // A write's payload is passed through, not copied.
    if (req.op === "write") expect(parts[1]).toBe(req.payload);
    expectSame(decodeRequest(join(parts)), req);
  });

  it.each([
    ["short", new Uint8Array(REQUEST_HEADER_BYTES - 1)],
    ["version", rawRequest({ version: 2 })],
    ["op", rawRequest({ op: 4 })],
    ["reserved", rawRequest({ reserved: 1 })],
    ["reserved", rawRequest({ op: 2, lo: 8, length: 0 })],
    ["unaligned", rawRequest({ length: 513 })],
    ["too-large", rawRequest({ length: MAX_BLOCK_LENGTH + 512 })],
    ["too-large", rawRequest({ hi: 2 ** 21 })],
    ["length-mismatch", rawRequest({ op: 1, length: 1024 }, 512)],
    ["length-mismatch", rawRequest({ op: 1, length: 512 }, 1024)],
    ["length-mismatch", rawRequest({ op: 0, length: 512 }, 512)],
    ["length-mismatch", rawRequest({ op: 2, length: 512 })],
  ] as const)("refuses a crafted request with code %s", (code, bytes) => {
    const r = decodeRequest(bytes);
    expect(r).toMatchObject({ kind: "invalid", code });
    expect((r as { detail: string }).detail.length).toBeGreaterThan(0);
  });

  it("decodes from a view into a larger buffer", () => {
    const req: BlockRequest = { kind: "request", op: "write", id: 9, sector: 5, length: 512, payload: payload(512) };
    const big = new Uint8Array(3 + REQUEST_HEADER_BYTES + 512 + 5);
    big.set(join(encodeRequest(req)), 3);
    expect(decodeRequest(big.subarray(3, 3 + REQUEST_HEADER_BYTES + 512))).toEqual(req);
  });

  it("refuses to encode a request no decoder would accept", () => {
    const bad: BlockRequest[] = [
      { kind: "request", op: "read", id: 1, sector: 0, length: 100 },
      { kind: "request", op: "read", id: -1, sector: 0, length: 512 },
      { kind: "request", op: "read", id: 1, sector: 2 ** 53, length: 512 },
      { kind: "request", op: "read", id: 1, sector: 0.5, length: 512 },
      { kind: "request", op: "flush", id: 1, sector: 1, length: 0 },
      { kind: "request", op: "write", id: 1, sector: 0, length: 1024, payload: new Uint8Array(512) },
    ];
    for (const req of bad) expect(() => encodeRequestHeader(req)).toThrow(BlockMessageError);
  });
});

describe("block responses", () => {
  const responses: BlockResponse[] = [
    { kind: "response", op: "read", status: "ok", id: 1, length: 4096, payload: payload(4096) },
    { kind: "response", op: "read", status: "io-error", id: 2, length: 4096 },
    { kind: "response", op: "write", status: "ok", id: 3, length: 512 },
    { kind: "response", op: "flush", status: "ok", id: 4, length: 0 },
    { kind: "response", op: "discard", status: "unsupported", id: 0xffffffff, length: 65_536 },
  ];

  it.each(responses.map((r) => [`${r.op} ${r.status}`, r] as const))("round-trips a %s reply", (_name, res) => {
    const parts = encodeResponse(res);
    expect(parts[0]).toEqual(encodeResponseHeader(res));
    expect(parts[0].byteLength).toBe(RESPONSE_HEADER_BYTES);
    if (res.payload) expect(parts[1]).toBe(res.payload);
    expectSame(decodeResponse(join(parts)), res);
  });

  it.each([
    ["short", new Uint8Array(RESPONSE_HEADER_BYTES - 1)],
    ["version", rawResponse({ version: 0 })],
    ["op", rawResponse({ op: 255 })],
    ["status", rawResponse({ status: 3 })],
    ["reserved", rawResponse({ reserved: 1 })],
    ["unaligned", rawResponse({ length: 100 })],
    ["too-large", rawResponse({ length: 2 * MAX_BLOCK_LENGTH })],
    ["length-mismatch", rawResponse({ op: 0, length: 1024 }, 512)],
    ["length-mismatch", rawResponse({ op: 0, status: 1, length: 512 }, 512)],
    ["length-mismatch", rawResponse({ op: 1, length: 512 }, 512)],
    ["length-mismatch", rawResponse({ op: 2, length: 512 })],
  ] as const)("refuses a crafted reply with code %s", (code, bytes) => {
    expect(decodeResponse(bytes)).toMatchObject({ kind: "invalid", code });
  });

  it("refuses to encode a reply no decoder would accept", () => {
    const bad: BlockResponse[] = [
      { kind: "response", op: "read", status: "ok", id: 1, length: 512 },
      { kind: "response", op: "read", status: "ok", id: 1, length: 512, payload: new Uint8Array(1024) },
      { kind: "response", op: "write", status: "ok", id: 1, length: 512, payload: new Uint8Array(512) },
      { kind: "response", op: "flush", status: "ok", id: 1, length: 512 },
      { kind: "response", op: "read", status: "io-error", id: 2 ** 32, length: 512 },
    ];
    for (const res of bad) expect(() => encodeResponseHeader(res)).toThrow(BlockMessageError);
  });
});

describe("block message decoders under random input", () => {
  it("never throw, and re-encode whatever they accept to the same bytes", () => {
    const rand = prng(0xb10c);
    const valid = [
      join(encodeRequest({ kind: "request", op: "write", id: 5, sector: 99, length: 1024, payload: payload(1024) })),
      join(encodeRequest({ kind: "request", op: "flush", id: 6, sector: 0, length: 0 })),
      join(encodeResponse({ kind: "response", op: "read", status: "ok", id: 7, length: 512, payload: payload(512) })),
      join(encodeResponse({ kind: "response", op: "write", status: "io-error", id: 8, length: 512 })),
    ];
    const seen = new Set<string>();
    for (let i = 0; i < 50_000; i++) {
      let input: Uint8Array;
      if (rand.next() < 0.5) {
        input = rand.bytes(rand.int(64));
        // Give the version and op a fair chance of being valid.
        if (input.length > 1 && rand.next() < 0.7) input[0] = 1;
        if (input.length > 2 && rand.next() < 0.7) input[1] = rand.int(4);
      } else {
        // A valid message with a few bytes changed, or cut short.
        input = valid[rand.int(valid.length)].slice();
        for (let k = rand.int(3); k >= 0; k--) input[rand.int(Math.min(input.length, 24))] = rand.int(256);
        if (rand.next() < 0.2) input = input.subarray(0, rand.int(input.length + 1));
      }
      const req = decodeRequest(input);
      const res = decodeResponse(input);
      seen.add(req.kind === "invalid" ? req.code : req.op);
      seen.add(res.kind === "invalid" ? res.code : `reply-${res.op}`);
      if (req.kind === "request") expect(sameBytes(join(encodeRequest(req)), input)).toBe(true);
      if (res.kind === "response") expect(sameBytes(join(encodeResponse(res)), input)).toBe(true);
    }
    // The fuzz reached both the accepting paths and most refusals.
    for (const k of ["write", "flush", "reply-read", "short", "version", "op", "reserved", "unaligned", "length-mismatch", "status"]) {
      expect(seen).toContain(k);
    }
  });
});
