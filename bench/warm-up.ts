// Before anything is measured, both sides of a benchmark run their work in
// turn until each has spent `seconds` at it: v86 compiles hot guest code to
// wasm and V8 then optimises that wasm on background threads, and until both
// settle a side runs slow and the compilers take CPU from the VMs
// (docs/benchmarks.md).

/** Runs each side's `work(round)` in turn until every side has run for `seconds`; `progress` gets the seconds spent per side after each round. */
export async function warmUp<Side extends string>(
  seconds: number,
  work: Record<Side, (round: number) => Promise<unknown>>,
  progress: (spentSeconds: Record<Side, number>) => void,
): Promise<void> {
  const sides = Object.keys(work) as Side[];
  const spent = Object.fromEntries(sides.map((s) => [s, 0])) as Record<Side, number>;
  for (let round = 0; sides.some((s) => spent[s] < seconds); round++) {
    for (const side of sides) {
      if (spent[side] >= seconds) continue;
      const t = performance.now();
      await work[side](round);
      spent[side] += (performance.now() - t) / 1000;
    }
    progress(spent);
  }
}
