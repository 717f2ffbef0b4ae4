import { describe, expect, it } from "vitest";
import { BufferPool } from "../../../dist/bridge/virtio-blk/buffer-pool.js";

describe("BufferPool", () => {
  it("hands a given-back buffer out again for the same length only, and keeps a bounded amount", () => {
    const pool = new BufferPool();
    const a = pool.take(65536);
    expect(a.length).toBe(65536);
    pool.give(a);
    expect(pool.take(4096)).not.toBe(a);
    expect(pool.take(65536)).toBe(a);
    expect(pool.take(65536)).not.toBe(a); // taken: not handed out twice
    // A view into a larger buffer is not pooled (its owner may still use the rest).
    const big = new Uint8Array(131072);
    pool.give(big.subarray(0, 65536));
    expect(pool.take(65536).buffer).not.toBe(big.buffer);
    // At most 8 MiB waits in the pool.
    const many = Array.from({ length: 40 }, () => new Uint8Array(256 * 1024));
    for (const b of many) pool.give(b);
    const back = new Set(Array.from({ length: 40 }, () => pool.take(256 * 1024)));
    expect(many.filter((b) => back.has(b)).length).toBe(32);
  });
});
