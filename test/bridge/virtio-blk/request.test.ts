import { describe, expect, it } from "vitest";
import { MAX_TRANSFER, VIRTIO_BLK_S, VIRTIO_BLK_T, parseRequest } from "../../../dist/bridge/virtio-blk/request.js";
import { FakeRequest, blkRequest } from "./fake.js";

const CAPACITY = 2048; // sectors: a 1 MiB disk

describe("parseRequest (virtio-blk requests from the app VM's driver)", () => {
  it("parses reads, writes, flushes and get-id", () => {
    expect(parseRequest(blkRequest(VIRTIO_BLK_T.IN, 8, { readLength: 4096 }), CAPACITY)).toEqual({ op: "read", sector: 8, length: 4096 });
    const data = new Uint8Array(1024).fill(7);
    expect(parseRequest(blkRequest(VIRTIO_BLK_T.OUT, 2046, { data }), CAPACITY)).toEqual({ op: "write", sector: 2046, length: 1024, data });
    expect(parseRequest(blkRequest(VIRTIO_BLK_T.FLUSH, 0), CAPACITY)).toEqual({ op: "flush", sector: 0, length: 0 });
    expect(parseRequest(blkRequest(VIRTIO_BLK_T.GET_ID, 0, { readLength: 20 }), CAPACITY)).toEqual({ op: "get-id", sector: 0, length: 20 });
  });

  it.each([
    ["a bad descriptor chain", blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512, fault: "buffer 0x9000000+512 outside guest memory" }), "bad-chain", VIRTIO_BLK_S.IOERR],
    ["a short header", new FakeRequest(new Uint8Array(8), 1), "short-header", VIRTIO_BLK_S.IOERR],
    ["no status byte", new FakeRequest(new Uint8Array(16), 0), "no-status", VIRTIO_BLK_S.IOERR],
    ["a read past the end", blkRequest(VIRTIO_BLK_T.IN, 2047, { readLength: 1024 }), "out-of-range", VIRTIO_BLK_S.IOERR],
    ["a write at a huge sector", blkRequest(VIRTIO_BLK_T.OUT, 2 ** 40, { data: new Uint8Array(512) }), "out-of-range", VIRTIO_BLK_S.IOERR],
    ["a length that is not a multiple of 512", blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 1000 }), "unaligned", VIRTIO_BLK_S.IOERR],
    ["a write of nothing", blkRequest(VIRTIO_BLK_T.OUT, 0, { data: new Uint8Array(0) }), "unaligned", VIRTIO_BLK_S.IOERR],
    ["a transfer over the advertised maximum", blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: MAX_TRANSFER + 512 }), "too-large", VIRTIO_BLK_S.IOERR],
    ["an unknown request type", blkRequest(99, 0), "unsupported", VIRTIO_BLK_S.UNSUPP],
    ["a discard (not offered)", blkRequest(VIRTIO_BLK_T.DISCARD, 0), "unsupported", VIRTIO_BLK_S.UNSUPP],
  ])("refuses %s", (_n, req, code, status) => {
    expect(parseRequest(req, CAPACITY)).toMatchObject({ code, status });
  });
});
