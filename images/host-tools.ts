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
 * with one patch of ours: TCP window scaling, without which one connection
 * keeps at most 64 KiB in flight (see the patch's header). Built once into
 * a static library in the cache; slirp-wire links it, and glib beside it.
 */
export const SLIRP_PATCH = "drivervm/net/wire/libslirp-window-scaling.patch";

/** The Debian archive's URIs the machine's apt already uses, for the same codename (a deb-src entry of our own reads them). */
function debianArchives(codename: string): string[] {
  const uris = new Set<string>();
  const dir = "/etc/apt/sources.list.d";
  const files = [...(existsSync(dir) ? readdirSync(dir).map((f) => join(dir, f)) : []), "/etc/apt/sources.list"].filter(
    (f) => existsSync(f) && /\.(sources|list)$/.test(f),
  );
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    if (file.endsWith(".sources")) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "mi").exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
        if (field("Types").includes("deb") && field("Suites").includes(codename) && field("Components").includes("main")) field("URIs").forEach((u) => uris.add(u));
      }
    } else {
      for (const line of text.split("\n")) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
        if (m && m[2] === codename && m[3]!.split(/\s+/).includes("main")) uris.add(m[1]!);
      }
    }
  }
  return uris.size > 0 ? [...uris] : ["http://deb.debian.org/debian"];
}

function osCodename(): string {
  const m = /^VERSION_CODENAME=(\S+)$/m.exec(existsSync("/etc/os-release") ? readFileSync("/etc/os-release", "utf8") : "");
  return m?.[1] ?? "bookworm";
}

async function buildLibslirp(root: string, dir: string, progress: (msg: string) => void, log: string): Promise<{ flags: string[]; key: string }> {
  const version = packageVersion("libslirp-dev");
  if (version === "unknown") throw new BuildError("libslirp-dev is not installed (install the Debian packages libslirp-dev, libglib2.0-dev, meson, ninja-build)");
  const patch = readFileSync(join(root, SLIRP_PATCH));
  const key = sha256("libslirp-v1", version, patch).slice(0, 16);
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

  progress(`host tools: building libslirp ${version} with window scaling (once)`);
  rmSync(home, { recursive: true, force: true });
  const apt = join(home, "apt");
  mkdirSync(join(apt, "sources"), { recursive: true });
  mkdirSync(join(apt, "lists", "partial"), { recursive: true });
  writeFileSync(join(apt, "sources.list"), "");
  const codename = osCodename();
  writeFileSync(
    join(apt, "sources", "debian-src.sources"),
    `Types: deb-src\nURIs: ${debianArchives(codename).join(" ")}\nSuites: ${codename}\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n`,
  );
  // A private apt state: the machine's own package lists and sources stay as they are.
  const aptOpts = ["-o", `Dir::Etc::SourceList=${join(apt, "sources.list")}`, "-o", `Dir::Etc::SourceParts=${join(apt, "sources")}`, "-o", `Dir::State::Lists=${join(apt, "lists")}`];
  try {
    await run("apt-get", [...aptOpts, "update", "-q"], { log });
    await run("apt-get", [...aptOpts, "source", "--download-only", "-q", `libslirp=${version}`], { cwd: home, log });
  } catch (err) {
    throw new BuildError(`could not download the source of libslirp ${version} from the Debian package archive (is it reachable?): ${(err as Error).message}`);
  }
  const orig = readdirSync(home).find((f) => /^libslirp_.*\.orig\.tar\.[a-z0-9]+$/.test(f));
  if (!orig) throw new BuildError(`apt-get source left no libslirp .orig tarball in ${home}`);
  mkdirSync(join(home, "unpack"));
  await run("tar", ["-xf", join(home, orig), "-C", join(home, "unpack")], { log });
  const [top] = readdirSync(join(home, "unpack"));
  if (!top) throw new BuildError(`libslirp's tarball ${orig} was empty`);
  renameSync(join(home, "unpack", top), join(home, "src"));
  await run("patch", ["-p1", "--forward", "-i", join(root, SLIRP_PATCH)], { cwd: join(home, "src"), log });
  await run("meson", ["setup", join(home, "build"), join(home, "src"), "-Ddefault_library=static", "--buildtype=release"], { log });
  await run("ninja", ["-C", join(home, "build")], { log });
  if (!existsSync(lib)) throw new BuildError(`building libslirp left no ${lib} (see ${log})`);
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
