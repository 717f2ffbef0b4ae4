// Builds the guest images once before any test runs (the first time on a
// machine this compiles the kernel: a few minutes, with progress).
import { buildImages } from "../dist/images/build.js";

export default async function setup(): Promise<void> {
  const t0 = Date.now();
  await buildImages((msg) => process.stderr.write(`[images] ${msg}\n`));
  process.stderr.write(`[images] ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}
