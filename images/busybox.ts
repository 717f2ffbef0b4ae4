// busybox-static:i386 from Debian, unpacked into the cache (the host's own
// busybox, if any, is left alone).
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ensureI386 } from "./preflight.js";
import { BuildError, run } from "./run.js";
import { assertI386Elf } from "./initramfs.js";

export async function fetchBusybox(cache: string, progress: (msg: string) => void): Promise<string> {
  const dir = join(cache, "busybox");
  const bin = join(dir, "root", "bin", "busybox");
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "fetch.log");
  progress("busybox: downloading busybox-static:i386");
  await ensureI386(log);
  try {
    await run("apt-get", ["download", "-q", "busybox-static:i386"], { cwd: dir, log });
  } catch (err) {
    throw new BuildError(`could not download busybox-static:i386 from the Debian package archive (is it reachable?): ${(err as Error).message}`);
  }
  const deb = readdirSync(dir).find((f) => f.startsWith("busybox-static_") && f.endsWith("_i386.deb"));
  if (!deb) throw new BuildError(`apt-get download left no busybox-static i386 package in ${dir}`);
  rmSync(join(dir, "root"), { recursive: true, force: true });
  await run("dpkg-deb", ["-x", join(dir, deb), join(dir, "root")], { log });
  assertI386Elf(bin);
  return bin;
}
