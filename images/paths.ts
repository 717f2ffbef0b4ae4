// Where Bulkhead keeps what it builds and what it runs. Nothing here is in git.
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The project's root folder (this file lives in dist/images/ or images/). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  if (dir.endsWith(join("dist", "images"))) dir = resolve(dir, "..", "..");
  else dir = resolve(dir, "..");
  return dir;
}

/** Build cache: kernel, helpers, initramfs, snapshots. Keyed by input hashes. */
export function cacheDir(): string {
  return process.env.BULKHEAD_CACHE ?? join(homedir(), ".cache", "bulkhead");
}

/** Runtime state of a running setup: control endpoint, console logs, events. */
export function runDir(): string {
  return process.env.BULKHEAD_RUN_DIR ?? join(homedir(), ".bulkhead");
}
