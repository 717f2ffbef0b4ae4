// Guest helpers: small C programs built as static i386 binaries.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { sha256 } from "./hash.js";
import { packageVersion } from "./preflight.js";
import { run } from "./run.js";

/** Helper name -> source file, relative to the project root. */
export const HELPERS: Record<string, string> = {
  agent: "drivervm/helpers/agent.c",
  pciback: "drivervm/pci/pciback.c",
  blkback: "drivervm/disk/blkback.c",
  netback: "drivervm/net/netback.c",
  blkbench: "bench/guest/blkbench.c",
  faultload: "guests/faultload.c",
  badvirtio: "guests/badvirtio.c",
  udpflood: "guests/udpflood.c",
};

export const CFLAGS = ["-m32", "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"];

/** The source and every header beside it or in drivervm/helpers/. */
function inputsOf(root: string, source: string): Buffer[] {
  const dirs = new Set([dirname(join(root, source)), join(root, "drivervm/helpers")]);
  const files = [join(root, source)];
  for (const d of dirs) for (const f of readdirSync(d).sort()) if (f.endsWith(".h")) files.push(join(d, f));
  return files.map((f) => Buffer.concat([Buffer.from(basename(f)), readFileSync(f)]));
}

export async function buildHelpers(root: string, cache: string, progress: (msg: string) => void): Promise<Record<string, string>> {
  const dir = join(cache, "helpers");
  mkdirSync(dir, { recursive: true });
  const out: Record<string, string> = {};
  for (const [name, source] of Object.entries(HELPERS)) {
    const key = sha256("helper-v1", name, ...inputsOf(root, source), CFLAGS.join(" "), packageVersion("gcc")).slice(0, 16);
    const bin = join(dir, `${name}-${key}`);
    if (!existsSync(bin)) {
      progress(`helpers: compiling ${name}`);
      await run("gcc", [...CFLAGS, "-o", `${bin}.tmp`, join(root, source)], { log: join(dir, `${name}.log`) });
      renameSync(`${bin}.tmp`, bin);
    }
    out[name] = bin;
  }
  return out;
}
