import { describe, expect, it } from "vitest";
import { RING_HEADER_BYTES, Ring, RingError } from "../../dist/bridge/ring.js";
import { prng } from "./fixtures/prng.mjs";

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const filled = (n: number, value: number): Uint8Array => new Uint8Array(n).fill(value);
// Much faster than toEqual on byte arrays, which matters in the fuzz loops.
const sameBytes = (x: Uint8Array | undefined, y: Uint8Array | undefined): boolean =>
  x !== undefined && y !== undefined && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

function expectRingError(fn: () => unknown, code: string): void {
  const e = thrown(fn);
  expect(e).toBeInstanceOf(RingError);
  expect((e as RingError).code).toBe(code);
}

// Word views over a ring's buffer, to play a buggy peer.
const headerOf = (ring: Ring): Int32Array => new Int32Array(ring.buffer, 0, RING_HEADER_BYTES / 4);
const dataWordsOf = (ring: Ring): Uint32Array => new Uint32Array(ring.buffer, RING_HEADER_BYTES);
const WRITE = 4;

describe("Ring", () => {
  it("delivers messages in order, each gathered from its parts", () => {
    const ring = Ring.create(256);
    expect(ring.write([bytes(1, 2), bytes(3)])).toBe(true);
    expect(ring.write([])).toBe(true);
    expect(ring.write([bytes(4, 5, 6, 7, 8)])).toBe(true);
    expect(ring.read()).toEqual(bytes(1, 2, 3));
    expect(ring.read()).toEqual(bytes());
    expect(ring.read()).toEqual(bytes(4, 5, 6, 7, 8));
    expect(ring.read()).toBeUndefined();
  });

  it("returns a copy that later writes do not change", () => {
    const ring = Ring.create(64);
    ring.write([filled(20, 1)]);
    const first = ring.read()!;
    expect(first.buffer).not.toBeInstanceOf(SharedArrayBuffer);
    for (let i = 0; i < 10; i++) {
      ring.write([filled(20, 2)]);
      ring.read();
    }
    expect(first).toEqual(filled(20, 1));
  });

  it("lends a message as a view of the ring and consumes it only after the call, even one that throws", () => {
    const ring = Ring.create(64);
    ring.write([filled(20, 1)]);
    ring.write([filled(8, 2)]);
    let seen: Uint8Array | undefined;
    expect(
      ring.readBorrowed((m) => {
        seen = m;
        expect(m.buffer).toBeInstanceOf(SharedArrayBuffer);
        expect(m).toEqual(filled(20, 1));
        // Not consumed yet: the writer cannot reuse its space during the call.
        expect(ring.bytesFree()).toBe(64 - 24 - 12);
      }),
    ).toBe(true);
    expect(seen!.length).toBe(20);
    expect(() =>
      ring.readBorrowed(() => {
        throw new Error("handler failed");
      }),
    ).toThrow("handler failed");
    expect(ring.bytesUnread()).toBe(0);
    expect(ring.readBorrowed(() => {})).toBe(false);
  });

  it("is usable through a second Ring attached to the same buffer", () => {
    const writer = Ring.create(128);
    const reader = new Ring(writer.buffer);
    writer.write([bytes(9, 8, 7)]);
    expect(reader.read()).toEqual(bytes(9, 8, 7));
    expect(writer.bytesFree()).toBe(128);
  });

  it("wraps a message that does not fit before the end of the data area", () => {
    const ring = Ring.create(64);
    // 4 + 28 bytes, then 4 + 20 bytes: 56 used, 8 left at the end.
    ring.write([filled(28, 1)]);
    ring.write([filled(20, 2)]);
    expect(ring.read()).toEqual(filled(28, 1));
    // 4 + 12 does not fit in the 8 bytes left: a marker, then offset 0.
    expect(ring.write([filled(12, 3)])).toBe(true);
    expect(ring.bytesFree()).toBe(64 - 24 - 8 - 16);
    expect(ring.read()).toEqual(filled(20, 2));
    expect(ring.read()).toEqual(filled(12, 3));
    expect(ring.read()).toBeUndefined();
    expect(ring.bytesFree()).toBe(64);
  });

  it("refuses a message when the ring is full, without touching unread data", () => {
    const ring = Ring.create(64);
    expect(ring.write([filled(28, 1)])).toBe(true);
    expect(ring.write([filled(24, 2)])).toBe(true);
    expect(ring.write([filled(1, 3)])).toBe(false);
    expect(ring.read()).toEqual(filled(28, 1));
    expect(ring.read()).toEqual(filled(24, 2));
  });

  it("refuses a message that fits only if the wrap skip is ignored", () => {
    const ring = Ring.create(64);
    ring.write([filled(20, 1)]); // 24 bytes at 0
    ring.write([filled(28, 2)]); // 32 bytes at 24; 8 left at the end
    ring.read(); // 24 free at the start, 32 free in all
    expect(ring.bytesFree()).toBe(32);
    // 4 + 24 = 28 <= 32 free, but 8 (skip) + 28 > 32.
    expect(ring.write([filled(24, 3)])).toBe(false);
    expect(ring.write([filled(20, 3)])).toBe(true);
    expect(ring.read()).toEqual(filled(28, 2));
    expect(ring.read()).toEqual(filled(20, 3));
  });

  it("accepts a message that exactly fills the ring and one that exactly reaches its end", () => {
    const ring = Ring.create(64);
    expect(ring.maxMessageBytes).toBe(28);
    expect(ring.write([filled(28, 1)])).toBe(true);
    expect(ring.write([filled(28, 2)])).toBe(true);
    expect(ring.bytesFree()).toBe(0);
    expect(ring.write([])).toBe(false);
    expect(ring.read()).toEqual(filled(28, 1));
    // The 32 bytes freed at the start take the next message exactly, with no wrap marker.
    expect(ring.write([filled(28, 3)])).toBe(true);
    expect(ring.bytesFree()).toBe(0);
    expect(ring.read()).toEqual(filled(28, 2));
    expect(ring.read()).toEqual(filled(28, 3));
    expect(ring.bytesFree()).toBe(64);
  });

  it("refuses a message above its limit with a RingError, even when empty", () => {
    const ring = Ring.create(64);
    expectRingError(() => ring.write([filled(29, 0)]), "too-large");
    expectRingError(() => ring.write([filled(20, 0), filled(9, 0)]), "too-large");
    expect(ring.bytesFree()).toBe(64);
  });

  it("always has room for a maximal message once empty, wherever it stands", () => {
    const ring = Ring.create(256);
    for (let shift = 0; shift < 256; shift += 4) {
      expect(ring.write([filled(ring.maxMessageBytes, shift & 0xff)])).toBe(true);
      expect(ring.read()).toEqual(filled(ring.maxMessageBytes, shift & 0xff));
      // Move the position forward by 4 bytes for the next round.
      ring.write([]);
      ring.read();
    }
  });

  it("survives the 32-bit wrap of its byte counters", () => {
    const ring = Ring.create(64);
    const header = headerOf(ring);
    // Both counters near 2^32, as after ~4 GiB of traffic.
    header[WRITE] = -16;
    header[WRITE + 1] = -16;
    const moved = new Ring(ring.buffer);
    for (let i = 0; i < 20; i++) {
      expect(moved.write([filled(10, i)])).toBe(true);
      expect(moved.read()).toEqual(filled(10, i));
    }
    expect(moved.bytesFree()).toBe(64);
  });

  it("passes a seeded random mix of sizes, parts and read timing byte for byte", () => {
    const rand = prng(0x5eed);
    const ring = Ring.create(4096);
    const pending: Uint8Array[] = [];
    let written = 0;
    let read = 0;
    while (read < 20_000) {
      if (rand.next() < 0.55) {
        const size = rand.next() < 0.1 ? ring.maxMessageBytes : rand.int(300);
        const message = rand.bytes(size);
        const cut = rand.int(size + 1);
        const ok = ring.write([message.subarray(0, cut), message.subarray(cut)]);
        if (ok) {
          pending.push(message);
          written++;
        } else {
          // Refused only when it really did not fit.
          expect(ring.fits(size)).toBe(false);
        }
      } else {
        const got = ring.read();
        if (pending.length === 0) expect(got).toBeUndefined();
        else {
          const want = pending.shift();
          if (!sameBytes(got, want)) expect(got).toEqual(want);
          read++;
        }
      }
    }
    expect(written).toBeGreaterThanOrEqual(read);
  });

  describe("attach", () => {
    it("refuses a buffer that is not a ring", () => {
      expectRingError(() => new Ring(new SharedArrayBuffer(256)), "bad-buffer");
      expectRingError(() => new Ring(new SharedArrayBuffer(8)), "bad-buffer");
      expectRingError(() => new Ring(new ArrayBuffer(256) as unknown as SharedArrayBuffer), "bad-buffer");
    });

    it("refuses another format version", () => {
      const ring = Ring.create(64);
      headerOf(ring)[1] = 2;
      expectRingError(() => new Ring(ring.buffer), "version");
    });

    it("refuses a size that disagrees with the buffer or is not a power of two", () => {
      const ring = Ring.create(64);
      headerOf(ring)[2] = 128;
      expectRingError(() => new Ring(ring.buffer), "size");
      headerOf(ring)[2] = 48;
      expectRingError(() => new Ring(ring.buffer), "size");
      expectRingError(() => Ring.create(100), "size");
      expectRingError(() => Ring.create(32), "size");
    });
  });

  describe("a buggy peer", () => {
    it("is caught when a length word exceeds the message limit", () => {
      const ring = Ring.create(64);
      ring.write([filled(8, 1)]);
      dataWordsOf(ring)[0] = 0x7fffffff;
      expectRingError(() => ring.read(), "corrupt");
      // Still corrupt on the next call, not a crash or a skip.
      expectRingError(() => ring.read(), "corrupt");
    });

    it("is caught when a length word runs past the write index", () => {
      const ring = Ring.create(64);
      ring.write([filled(8, 1)]);
      dataWordsOf(ring)[0] = 24;
      expectRingError(() => ring.read(), "corrupt");
    });

    it("is caught when the write index runs more than a ring ahead", () => {
      const ring = Ring.create(64);
      headerOf(ring)[WRITE] = 1000;
      expectRingError(() => ring.read(), "corrupt");
      headerOf(ring)[WRITE] = 6; // not a record boundary
      expectRingError(() => ring.read(), "corrupt");
    });

    it("is caught when a wrap marker stands at offset 0 or skips past the write index", () => {
      const ring = Ring.create(64);
      ring.write([filled(8, 1)]);
      dataWordsOf(ring)[0] = 0xffffffff;
      expectRingError(() => ring.read(), "corrupt");
      const other = Ring.create(64);
      other.write([filled(8, 1)]);
      other.read();
      other.write([filled(4, 2)]); // at offset 12, 8 bytes
      dataWordsOf(other)[3] = 0xffffffff; // a marker that would skip 52 bytes
      expectRingError(() => other.read(), "corrupt");
    });

    it("is caught on the writer's side when the read index is out of range", () => {
      const ring = Ring.create(64);
      headerOf(ring)[WRITE + 1] = 1000;
      expectRingError(() => ring.write([bytes(1)]), "corrupt");
    });

    it("never makes the reader throw anything but a RingError, nor loop", () => {
      const rand = prng(42);
      for (let round = 0; round < 2000; round++) {
        const ring = Ring.create(256);
        for (let i = rand.int(8); i > 0; i--) ring.write([rand.bytes(rand.int(100))]);
        const words = new Uint32Array(ring.buffer);
        for (let i = rand.int(4); i >= 0; i--) {
          // Scribble over a data word or an index, with a value likely to matter.
          const at = rand.next() < 0.3 ? WRITE : 16 + rand.int(64);
          const choices = [rand.int(2 ** 32), 0xffffffff, rand.int(300), (rand.int(64) * 4) >>> 0];
          words[at] = choices[rand.int(choices.length)];
        }
        for (let i = 0; i < 100; i++) {
          const e = thrown(() => {
            const got = ring.read();
            if (got !== undefined) expect(got.byteLength).toBeLessThanOrEqual(ring.maxMessageBytes);
          });
          if (e === undefined) continue;
          expect(e).toBeInstanceOf(RingError);
          break;
        }
      }
    });
  });

  it("wakes a writer waiting for space on the first read that makes room", async () => {
    const writer = Ring.create(64);
    const reader = new Ring(writer.buffer);
    writer.write([filled(28, 1)]);
    writer.write([filled(28, 2)]);
    let fits: boolean | undefined;
    const waiting = writer.whenFits(28).then((ok) => (fits = ok));
    await new Promise((r) => setTimeout(r, 10));
    expect(fits).toBeUndefined();
    reader.read();
    await waiting;
    expect(fits).toBe(true);
    expect(writer.write([filled(28, 3)])).toBe(true);
  });

  it("tells a writer waiting for space that it never will get it once revoked or stopped", async () => {
    const ring = Ring.create(64);
    ring.write([filled(28, 1)]);
    ring.write([filled(28, 2)]);
    expect(await ring.whenFits(29)).toBe(false);
    let stop = false;
    const stopped = ring.whenFits(28, () => stop);
    stop = true;
    ring.wakeWriter();
    expect(await stopped).toBe(false);
    const revoked = ring.whenFits(28);
    new Ring(ring.buffer).revoke();
    expect(await revoked).toBe(false);
  });

  it("drops unread data and refuses writes once revoked", () => {
    const ring = Ring.create(64);
    ring.write([bytes(1)]);
    ring.revoke();
    expect(ring.revoked).toBe(true);
    expect(new Ring(ring.buffer).revoked).toBe(true);
    expect(ring.read()).toBeUndefined();
    expect(ring.write([bytes(2)])).toBe(false);
  });
});
