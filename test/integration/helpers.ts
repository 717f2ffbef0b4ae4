// Shared by the tests that boot real VMs.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildImages, type ImageSet } from "../../dist/images/build.js";

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `bulkhead-${prefix}-`));
}

let images: Promise<ImageSet> | undefined;
/** The images built by the global setup (a cache hit here). */
export function testImages(): Promise<ImageSet> {
  images ??= buildImages();
  return images;
}

/** Polls until `check` holds or the time runs out; returns whether it held. */
export async function eventually(check: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return check();
}

/** Whether this process may lower nice values: CAP_SYS_NICE (bit 23) in its effective set. */
export function hasCapSysNice(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
  return m !== null && (BigInt(`0x${m[1]}`) & (1n << 23n)) !== 0n;
}
