// The guest kernel: Debian's linux-source-6.1 with our own minimal config
// (images/kernel/bulkhead.config on top of allnoconfig). Drivers are stock
// and built in; cached by the hash of the source version and the config.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, copyFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { sha256 } from "./hash.js";
import { packageVersion, ensureFreeSpace } from "./preflight.js";
import { BuildError, run } from "./run.js";
import { driverText } from "./driver-text.js";

export const KERNEL_SOURCE_TARBALL = "/usr/src/linux-source-6.1.tar.xz";
const KERNEL_BUILD_BYTES = 2.5 * 2 ** 30;

export interface KernelInputs {
  configPath: string;
  cache: string;
}

export function kernelKey(inputs: KernelInputs): string {
  return sha256("kernel-v1", readFileSync(inputs.configPath), packageVersion("linux-source-6.1"), packageVersion("gcc"));
}

/** Options the config asks for that the kernel's Kconfig did not keep. */
export function missingOptions(wanted: string, got: string): string[] {
  const have = new Set(got.split("\n"));
  return wanted
    .split("\n")
    .filter((l) => /^CONFIG_[A-Z0-9_]+=y$/.test(l))
    .filter((l) => !have.has(l));
}

/** The map of driver code for the `flip` fault, beside a bzImage. */
export function driverTextPath(bzimage: string): string {
  return bzimage.replace(/bzImage-([0-9a-f]+)$/, "driver-text-$1.json");
}

/** Builds (or finds) the bzImage; returns its path. */
export async function buildKernel(inputs: KernelInputs, progress: (msg: string) => void): Promise<string> {
  const key = kernelKey(inputs).slice(0, 16);
  const dir = join(inputs.cache, "kernel");
  const out = join(dir, `bzImage-${key}`);
  const build = join(dir, `build-${key}`);
  if (existsSync(out)) {
    // Caches from before the flip fault have the build tree but no map yet.
    await driverText(build, driverTextPath(out), join(dir, `build-${key}.log`)).catch(() => undefined);
    return out;
  }
  if (!existsSync(KERNEL_SOURCE_TARBALL)) throw new BuildError(`${KERNEL_SOURCE_TARBALL} is missing: install linux-source-6.1`);
  ensureFreeSpace(dir, KERNEL_BUILD_BYTES, "the kernel build");
  const log = join(dir, `build-${key}.log`);
  rmSync(log, { force: true });

  const srcRoot = join(dir, `src-${sha256(packageVersion("linux-source-6.1")).slice(0, 12)}`);
  const src = join(srcRoot, "linux-source-6.1");
  if (!existsSync(join(srcRoot, ".extracted"))) {
    progress("kernel: unpacking linux-source-6.1");
    rmSync(srcRoot, { recursive: true, force: true });
    mkdirSync(srcRoot, { recursive: true });
    await run("tar", ["-xf", KERNEL_SOURCE_TARBALL, "-C", srcRoot], { log });
    await run("touch", [join(srcRoot, ".extracted")], { log });
  }

  mkdirSync(build, { recursive: true });
  progress("kernel: configuring");
  await run("make", ["-s", `O=${build}`, "ARCH=i386", `KCONFIG_ALLCONFIG=${inputs.configPath}`, "allnoconfig"], {
    cwd: src,
    log,
  });
  const missing = missingOptions(readFileSync(inputs.configPath, "utf8"), readFileSync(join(build, ".config"), "utf8"));
  if (missing.length > 0) {
    throw new BuildError(`kernel config: Kconfig dropped ${missing.join(", ")} (a dependency is missing in ${inputs.configPath})`);
  }

  let compiled = 0;
  let last = 0;
  const started = Date.now();
  progress("kernel: compiling (a few minutes, once)");
  await run("make", [`-j${availableParallelism()}`, "ARCH=i386", "bzImage"], {
    cwd: build,
    log,
    onLine: (line) => {
      if (/^\s+CC\s/.test(line)) compiled++;
      if (Date.now() - last > 5000) {
        last = Date.now();
        progress(`kernel: compiling, ${compiled} files, ${Math.round((Date.now() - started) / 1000)} s`);
      }
    },
  });
  const tmp = `${out}.tmp`;
  copyFileSync(join(build, "arch/x86/boot/bzImage"), tmp);
  renameSync(tmp, out);
  await driverText(build, driverTextPath(out), log);
  progress(`kernel: built in ${Math.round((Date.now() - started) / 1000)} s`);
  return out;
}

/** gen_init_cpio from the kernel tree: builds initramfs archives without root. */
export async function buildGenInitCpio(cache: string): Promise<string> {
  const dir = join(cache, "tools");
  const out = join(dir, "gen_init_cpio");
  if (existsSync(out)) return out;
  const srcRoot = join(cache, "kernel");
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "gen_init_cpio.log");
  const extracted = join(srcRoot, "gen_init_cpio.c");
  await run("sh", ["-c", `tar -xOf ${KERNEL_SOURCE_TARBALL} linux-source-6.1/usr/gen_init_cpio.c > ${extracted}`], { log });
  await run("cc", ["-O2", "-o", out, extracted], { log });
  return out;
}
