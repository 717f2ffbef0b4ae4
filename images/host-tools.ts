// Host tools: small C programs that run on the host itself (x86_64,
// dynamically linked), such as the wire behind the net VM's NIC.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sha256 } from "./hash.js";
import { packageVersion } from "./preflight.js";
import { BuildError, run } from "./run.js";

export const SLIRP_WIRE_SOURCE = "drivervm/net/wire/slirp-wire.c";

export const HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"];

/**
 * libslirp, as Debian ships it (the source of the installed libslirp-dev),
 * with our patches on top, in this order (each explains itself in its
 * header): TCP window scaling, without which one connection keeps at most
 * 64 KiB in flight; a congestion window that counts bytes acknowledged, not
 * ACKs, and a larger send buffer. Built once into a static library in the
 * cache; slirp-wire links it, and glib beside it.
 */
export const SLIRP_PATCHES = ["drivervm/net/wire/libslirp-window-scaling.patch", "drivervm/net/wire/libslirp-byte-counting.patch"];

/**
 * deb-src entries mirroring the machine's own deb entries for this release
 * (its -updates and -security suites included, where a newer libslirp-dev
 * may come from), as "URI SUITE" pairs.
 */
function debianSourceEntries(codename: string): string[] {
  const entries = new Set<string>();
  const ours = (suite: string) => suite === codename || suite.startsWith(`${codename}-`) || suite.startsWith(`${codename}/`);
  const dir = "/etc/apt/sources.list.d";
  const files = [...(existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)) : []), "/etc/apt/sources.list"].filter(
    (f) => existsSync(f) && /\.(sources|list)$/.test(f),
  );
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    if (file.endsWith(".sources")) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "mi").exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
        if (!field("Types").includes("deb") || !field("Components").includes("main")) continue;
        for (const uri of field("URIs")) for (const suite of field("Suites")) if (ours(suite)) entries.add(`${uri} ${suite}`);
      }
    } else {
      for (const line of text.split("\n")) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
        if (m && ours(m[2]!) && m[3]!.split(/\s+/).includes("main")) entries.add(`${m[1]} ${m[2]}`);
      }
    }
  }
  return entries.size > 0 ? [...entries] : [`http://deb.debian.org/debian ${codename}`];
}

function osCodename(): string {
  const m = /^VERSION_CODENAME=(\S+)$/m.exec(existsSync("/etc/os-release") ? readFileSync("/etc/os-release", "utf8") : "");
  return m?.[1] ?? "bookworm";
}

async function buildLibslirp(root: string, dir: string, progress: (msg: string) => void, log: string): Promise<{ flags: string[]; key: string }> {
  const version = packageVersion("libslirp-dev");
  if (version === "unknown") throw new BuildError("libslirp-dev is not installed (install the Debian packages libslirp-dev, libglib2.0-dev, meson, ninja-build)");
  const patches = SLIRP_PATCHES.map((p) => readFileSync(join(root, p)));
  const key = sha256("libslirp-v2", version, ...patches).slice(0, 16);
  const home = join(dir, `libslirp-${key}`);
  const lib = join(home, "build", "libslirp.a");
  const glib = async () => (await run("pkg-config", ["--cflags", "--libs", "glib-2.0"], { log })).toString().split(/\s+/).filter(Boolean);
  let glibFlags: string[];
  try {
    glibFlags = await glib();
  } catch (err) {
    throw new BuildError(`cannot find glib with pkg-config (install the Debian packages libglib2.0-dev and pkg-config): ${(err as Error).message}`);
  }
  const flags = [`-I${join(home, "src", "src")}`, `-I${join(home, "build")}`, lib, ...glibFlags];
  if (existsSync(lib)) return { flags, key };

  progress(`host tools: building libslirp ${version} with our patches (once)`);
  // Built aside and moved into place whole: an interrupted build is never taken for a finished one.
  const work = `${home}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  const apt = join(work, "apt");
  mkdirSync(join(apt, "sources"), { recursive: true });
  mkdirSync(join(apt, "lists", "partial"), { recursive: true });
  mkdirSync(join(apt, "cache", "archives", "partial"), { recursive: true });
  writeFileSync(join(apt, "sources.list"), "");
  const stanzas = debianSourceEntries(osCodename()).map((entry) => {
    const [uri, suite] = entry.split(" ");
    return `Types: deb-src\nURIs: ${uri}\nSuites: ${suite}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`;
  });
  writeFileSync(join(apt, "sources", "debian-src.sources"), stanzas.join("\n"));
  // A private apt state: the machine's own package lists, caches and sources stay as they are.
  const aptOpts = [
    ["Dir::Etc::SourceList", join(apt, "sources.list")],
    ["Dir::Etc::SourceParts", join(apt, "sources")],
    ["Dir::State::Lists", join(apt, "lists")],
    ["Dir::Cache", join(apt, "cache")],
  ].flatMap(([k, v]) => ["-o", `${k}=${v}`]);
  try {
    await run("apt-get", [...aptOpts, "update", "-q"], { log });
    await run("apt-get", [...aptOpts, "source", "--download-only", "-q", `libslirp=${version}`], { cwd: work, log });
  } catch (err) {
    throw new BuildError(`could not download the source of libslirp ${version} from the Debian package archive (is it reachable?): ${(err as Error).message}`);
  }
  const dsc = readdirSync(work).find((f) => /^libslirp_.*\.dsc$/.test(f));
  if (!dsc) throw new BuildError(`apt-get source left no libslirp .dsc in ${work}`);
  // dpkg-source applies Debian's own patches, as the installed library has them; then ours.
  await run("dpkg-source", ["--no-check", "-x", dsc, join(work, "src")], { cwd: work, log });
  for (const p of SLIRP_PATCHES) await run("patch", ["-p1", "--forward", "-i", join(root, p)], { cwd: join(work, "src"), log });
  await run("meson", ["setup", join(work, "build"), join(work, "src"), "-Ddefault_library=static", "--buildtype=release"], { log });
  await run("ninja", ["-C", join(work, "build")], { log });
  if (!existsSync(join(work, "build", "libslirp.a"))) throw new BuildError(`building libslirp left no libslirp.a (see ${log})`);
  rmSync(home, { recursive: true, force: true });
  renameSync(work, home);
  return { flags, key };
}

export async function buildHostTools(root: string, cache: string, progress: (msg: string) => void): Promise<{ slirpWire: string }> {
  const dir = join(cache, "host-tools");
  mkdirSync(dir, { recursive: true });
  const log = join(dir, "slirp-wire.log");
  const slirp = await buildLibslirp(root, dir, progress, log);
  const source = join(root, SLIRP_WIRE_SOURCE);
  const key = sha256("host-tool-v2", "slirp-wire", readFileSync(source), [...HOST_CFLAGS, ...slirp.flags].join(" "), packageVersion("gcc"), slirp.key).slice(0, 16);
  const bin = join(dir, `slirp-wire-${key}`);
  if (!existsSync(bin)) {
    progress("host tools: compiling slirp-wire");
    // Libraries after the source, or the linker drops them unused.
    await run("gcc", [...HOST_CFLAGS, "-o", `${bin}.tmp`, source, ...slirp.flags], { log });
    renameSync(`${bin}.tmp`, bin);
  }
  return { slirpWire: bin };
}
