// Before a build: are the tools and Debian packages there, can we install
// what is missing, is there room on disk? Each failure says what to do.
import { execFileSync } from "node:child_process";
import { mkdirSync, statfsSync } from "node:fs";
import { BuildError, run } from "./run.js";

/** Debian packages the image build uses on the host (amd64 unless noted). */
export const HOST_PACKAGES = [
  "linux-source-6.1",
  "build-essential",
  "bc",
  "flex",
  "bison",
  "libelf-dev",
  "libssl-dev",
  "gcc-multilib",
  "seabios",
  "xz-utils",
  // The wire behind the net VM's NIC: a host helper built on QEMU's user-mode network,
  // libslirp, rebuilt from Debian's source of the installed libslirp-dev with our patch.
  "libslirp-dev",
  "pkg-config",
  "libglib2.0-dev",
  "meson",
  "ninja-build",
  "bzip2",
];

function installed(pkg: string): boolean {
  try {
    const out = execFileSync("dpkg-query", ["-W", "-f=${Status}", pkg], { stdio: ["ignore", "pipe", "ignore"] });
    return out.toString().includes("install ok installed");
  } catch {
    return false;
  }
}

export function packageVersion(pkg: string): string {
  try {
    return execFileSync("dpkg-query", ["-W", "-f=${Version}", pkg], { stdio: ["ignore", "pipe", "ignore"] }).toString();
  } catch {
    return "unknown";
  }
}

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Makes sure the i386 architecture is known to apt (for busybox-static:i386). */
export async function ensureI386(log: string): Promise<void> {
  const arches = execFileSync("dpkg", ["--print-foreign-architectures"]).toString();
  if (arches.split("\n").includes("i386")) return;
  if (!isRoot()) {
    throw new BuildError("the image build needs Debian's i386 packages: run as root, or first run `dpkg --add-architecture i386 && apt-get update`");
  }
  await run("dpkg", ["--add-architecture", "i386"], { log });
  await aptUpdate(log);
}

async function aptUpdate(log: string): Promise<void> {
  try {
    await run("apt-get", ["update", "-q"], { log });
  } catch {
    // A partly failed update (one index out of sync) still leaves usable lists;
    // a real outage shows up below as a failed install or download.
  }
}

export async function ensureHostPackages(log: string, progress: (msg: string) => void): Promise<void> {
  const missing = HOST_PACKAGES.filter((p) => !installed(p));
  if (missing.length === 0) return;
  if (!isRoot()) {
    throw new BuildError(
      `the image build needs these Debian packages: ${missing.join(" ")}. ` +
        `Install them as root (apt-get install ${missing.join(" ")}) or run the build as root.`,
    );
  }
  progress(`installing ${missing.join(", ")}`);
  await aptUpdate(log);
  try {
    await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], {
      log,
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  } catch (err) {
    throw new BuildError(
      `could not install ${missing.join(" ")} from the Debian package archive (is it reachable?): ${(err as Error).message}`,
    );
  }
}

/** Fails early, with figures, when the disk cannot hold a build. */
export function ensureFreeSpace(dir: string, neededBytes: number, what: string): void {
  mkdirSync(dir, { recursive: true });
  const s = statfsSync(dir);
  const free = s.bavail * s.bsize;
  if (free < neededBytes) {
    const gib = (n: number) => (n / 2 ** 30).toFixed(1);
    throw new BuildError(`not enough disk space for ${what}: ${gib(free)} GiB free in ${dir}, ${gib(neededBytes)} GiB needed`);
  }
}
