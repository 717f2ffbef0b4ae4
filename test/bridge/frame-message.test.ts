import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame, MAX_FRAME, MIN_FRAME } from "../../dist/bridge/frame-message.js";

const join = (parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), (at += p.length);
  return out;
};

describe("frame messages", () => {
  it("round-trips frames of every legal size", () => {
    for (const n of [MIN_FRAME, 60, 1000, MAX_FRAME]) {
      const f = new Uint8Array(n).map((_, i) => i & 0xff);
      expect(decodeFrame(join(encodeFrame(f)))).toEqual(f);
    }
  });

  it("refuses to encode runt and oversized frames", () => {
    expect(() => encodeFrame(new Uint8Array(13))).toThrow(/runt/);
    expect(() => encodeFrame(new Uint8Array(1515))).toThrow(/oversized/);
  });

  it("names every way a message can be wrong", () => {
    const good = join(encodeFrame(new Uint8Array(60)));
    const bad = (mutate: (b: Uint8Array) => Uint8Array) => decodeFrame(mutate(good.slice()));
    expect(bad((b) => b.subarray(0, 3))).toMatchObject({ code: "short" });
    expect(bad((b) => ((b[0] = 9), b))).toMatchObject({ code: "version" });
    expect(bad((b) => ((b[1] = 2), b))).toMatchObject({ code: "kind" });
    expect(bad((b) => b.subarray(0, 50))).toMatchObject({ code: "length-mismatch" });
    expect(decodeFrame(Uint8Array.of(1, 1, 5, 0, 1, 2, 3, 4, 5))).toMatchObject({ code: "runt" });
    const big = new Uint8Array(4 + 1600);
    big.set([1, 1, 1600 & 0xff, 1600 >> 8]);
    expect(decodeFrame(big)).toMatchObject({ code: "oversized" });
  });
});
