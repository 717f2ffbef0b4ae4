// The image build: kernel, helpers, busybox and one initramfs per role,
// each cached by the hash of its inputs; a manifest lists every artifact
// with its sha256. Runs by itself the first time `up`, `run` or the tests
// need images.
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildHelpers } from "./helpers.js";
import { buildHostTools } from "./host-tools.js";
import { sha256, sha256File } from "./hash.js";
import { buildGenInitCpio, buildKernel, driverTextPath } from "./kernel.js";
import { ROLES, buildInitramfs, type Role } from "./initramfs.js";
import { fetchBusybox } from "./busybox.js";
import { cacheDir, projectRoot } from "./paths.js";
import { ensureHostPackages } from "./preflight.js";
import { BuildError } from "./run.js";

export const SEABIOS = "/usr/share/seabios/bios.bin";
export const VGABIOS = "/usr/share/seabios/vgabios-stdvga.bin";

export interface ImageSet {
  /** Hash of every artifact: snapshots taken from these images carry it. */
  key: string;
  bzimage: string;
  bios: string;
  vgaBios: string;
  initrd: Record<Role, string>;
  /** Where the driver VMs' driver code lives in the kernel (driver-text.ts), for the flip fault. */
  driverText: string;
  /** Programs that run on the host: the wire behind the net VM's NIC. */
  hostTools: { slirpWire: string };
  manifest: string;
}

export interface Manifest {
  key: string;
  built: string;
  artifacts: Record<string, { path: string; sha256: string; bytes: number }>;
}

export type Progress = (msg: string) => void;

export async function buildImages(progress: Progress = () => {}): Promise<ImageSet> {
  const root = projectRoot();
  const cache = cacheDir();
  mkdirSync(cache, { recursive: true });
  await ensureHostPackages(join(cache, "apt.log"), progress);
  for (const f of [SEABIOS, VGABIOS]) if (!existsSync(f)) throw new BuildError(`${f} is missing: install seabios`);

  const bzimage = await buildKernel({ configPath: join(root, "images/kernel/bulkhead.config"), cache }, progress);
  const helpers = await buildHelpers(root, cache, progress);
  const hostTools = await buildHostTools(root, cache, progress);
  const busybox = await fetchBusybox(cache, progress);
  const genInitCpio = await buildGenInitCpio(cache);
  const init = join(root, "images/initramfs/init");

  const initrd = {} as Record<Role, string>;
  for (const role of ROLES) {
    initrd[role] = await buildInitramfs({ role, genInitCpio, busybox, init, helpers, cache });
  }

  const files: Record<string, string> = { bzimage, bios: SEABIOS, vgaBios: VGABIOS, busybox };
  for (const [name, path] of Object.entries(helpers)) files[`helper/${name}`] = path;
  files["host/slirp-wire"] = hostTools.slirpWire;
  for (const role of ROLES) files[`initrd/${role}`] = initrd[role];
  const artifacts: Manifest["artifacts"] = {};
  for (const [name, path] of Object.entries(files)) {
    artifacts[name] = { path, sha256: await sha256File(path), bytes: statSync(path).size };
  }
  // Snapshots carry this key: host tools never enter a guest, so they are left out of it.
  const key = sha256(...Object.entries(artifacts).filter(([n]) => !n.startsWith("host/")).map(([n, a]) => `${n}=${a.sha256}`)).slice(0, 16);
  const manifestPath = join(cache, "manifest.json");
  const manifest: Manifest = { key, built: new Date().toISOString(), artifacts };
  writeFileSync(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2) + "\n");
  renameSync(`${manifestPath}.tmp`, manifestPath);
  return { key, bzimage, bios: SEABIOS, vgaBios: VGABIOS, initrd, driverText: driverTextPath(bzimage), hostTools, manifest: manifestPath };
}

/** Reads the manifest written by the last build, if any. */
export function readManifest(): Manifest | undefined {
  const path = join(cacheDir(), "manifest.json");
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as Manifest;
}
