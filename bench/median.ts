// The medians the benchmarks report. The machines are shared and noisy, so
// every figure is a median of rounds, and a ratio is also given paired: the
// median of each round's own ratio, the two sides measured back to back.

/** The median of `xs` (the upper one of an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** The median item of `xs` by `key`: its other figures go with it. */
export function medianBy<T>(xs: T[], key: (x: T) => number): T {
  return [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)];
}

/** The median of each round's ratio `f(via) / f(direct)`; round i of each side was measured back to back. */
export function pairedRatio<T>(via: T[], direct: T[], f: (x: T) => number): number {
  return median(via.map((x, i) => f(x) / f(direct[i])));
}
