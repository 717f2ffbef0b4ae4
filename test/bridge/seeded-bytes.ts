// Reproducible pseudo-random bytes for the tests (xorshift32; nearby seeds
// give unrelated streams).
export function seededBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = Math.imul(seed, 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
