// Host tools: small C programs that run on the host itself (x86_64,
// dynamically linked), such as the wire behind the net VM's NIC.
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { sha256 } from "./hash.js";
import { packageVersion } from "./preflight.js";
import { BuildError, run } from "./run.js";

export const SLIRP_WIRE_SOURCE = "drivervm/net/wire/slirp-wire.c";

export const HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"];

/**
 * Compiler and linker flags for libslirp. Debian's slirp.pc names glib-2.0
 * as a requirement, yet libslirp-dev does not pull in libglib2.0-dev and
 * libslirp.h needs nothing from glib: when only that requirement is
 * missing, the flags come from slirp.pc's own variables.
 */
async function slirpFlags(log: string): Promise<string[]> {
  const words = (b: Buffer) => b.toString("utf8").split(/\s+/).filter(Boolean);
  try {
    return words(await run("pkg-config", ["--cflags", "--libs", "slirp"], { log }));
  } catch (err) {
    let includedir: string, libdir: string;
    try {
      // Depth 1: read slirp.pc alone, without resolving what it requires.
      const variable = async (name: string) =>
        (await run("pkg-config", ["--maximum-traverse-depth=1", `--variable=${name}`, "slirp"], { log })).toString().trim();
      includedir = await variable("includedir");
      libdir = await variable("libdir");
    } catch {
      includedir = libdir = "";
    }
    if (includedir && libdir && existsSync(join(includedir, "slirp", "libslirp.h"))) {
      return [`-I${join(includedir, "slirp")}`, `-L${libdir}`, "-lslirp"];
    }
    throw new BuildError(
      `cannot find libslirp with pkg-config (install the Debian packages libslirp-dev and pkg-config): ${(err as Error).message}`,
    );
  }
}

export async function buildHostTools(root: string, cache: string, progress: (msg: string) => void): Promise<{ slirpWire: string }> {
  const dir = join(cache, "host-tools");
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "slirp-wire.log");
  const flags = await slirpFlags(log);
  const source = join(root, SLIRP_WIRE_SOURCE);
  const key = sha256(
    "host-tool-v1",
    "slirp-wire",
    readFileSync(source),
    [...HOST_CFLAGS, ...flags].join(" "),
    packageVersion("gcc"),
    packageVersion("libslirp-dev"),
  ).slice(0, 16);
  const bin = join(dir, `slirp-wire-${key}`);
  if (!existsSync(bin)) {
    progress("host tools: compiling slirp-wire");
    // Libraries after the source, or the linker drops them unused.
    await run("gcc", [...HOST_CFLAGS, "-o", `${bin}.tmp`, source, ...flags], { log });
    renameSync(`${bin}.tmp`, bin);
  }
  return { slirpWire: bin };
}
