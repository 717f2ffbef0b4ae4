// One initramfs per role: busybox, the shared /init, and the role's helper.
import { existsSync, mkdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { sha256 } from "./hash.js";
import { BuildError, run } from "./run.js";

export const ROLES = ["app", "disk", "net", "pci", "baseline"] as const;
export type Role = (typeof ROLES)[number];

/** The helpers each role's initramfs carries (in /bin); /init starts the right one. */
export const ROLE_HELPERS: Record<Role, string[]> = {
  app: ["agent", "blkbench", "faultload", "badvirtio", "udpflood"],
  disk: ["blkback", "agent"],
  net: ["netback", "agent"],
  pci: ["pciback"],
  baseline: ["agent", "blkbench"],
};

const DIRS = ["/bin", "/sbin", "/dev", "/etc", "/proc", "/sys", "/tmp", "/mnt", "/root", "/usr", "/usr/bin", "/usr/sbin"];

/** Checks that a file is a 32-bit x86 ELF executable (the guest is i386). */
export function assertI386Elf(path: string): void {
  const head = readFileSync(path).subarray(0, 20);
  const isElf = head[0] === 0x7f && head.toString("latin1", 1, 4) === "ELF";
  if (!isElf || head[4] !== 1 || head.readUInt16LE(18) !== 3) throw new BuildError(`${path} is not an i386 ELF executable`);
}

export interface InitramfsInputs {
  role: Role;
  genInitCpio: string;
  busybox: string;
  init: string;
  /** Helper name -> built binary. */
  helpers: Record<string, string>;
  cache: string;
}

export async function buildInitramfs(i: InitramfsInputs): Promise<string> {
  const names = ROLE_HELPERS[i.role];
  const key = sha256("initramfs-v3", i.role, readFileSync(i.busybox), readFileSync(i.init), ...names.flatMap((n) => [n, readFileSync(i.helpers[n])])).slice(0, 16);
  const dir = join(i.cache, "initramfs");
  const out = join(dir, `${i.role}-${key}.cpio.gz`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  assertI386Elf(i.busybox);
  for (const n of names) assertI386Elf(i.helpers[n]);
  // gen_init_cpio records each file's mtime: stage copies dated 0 so the
  // archive depends on the contents alone (and its hash is reproducible).
  const stage = join(dir, `stage-${i.role}`);
  mkdirSync(stage, { recursive: true });
  const staged = (name: string, from: string | Buffer) => {
    const path = join(stage, name);
    writeFileSync(path, typeof from === "string" ? readFileSync(from) : from);
    utimesSync(path, 0, 0);
    return path;
  };
  const busybox = staged("busybox", i.busybox);
  const init = staged("init", i.init);
  const helperLines = names.map((n) => `file /bin/${n} ${staged(n, i.helpers[n])} 0755 0 0`);
  const roleFile = staged("role", Buffer.from(`${i.role}\n`));
  const spec = [
    ...DIRS.map((d) => `dir ${d} 0755 0 0`),
    "nod /dev/console 0600 0 0 c 5 1",
    `file /bin/busybox ${busybox} 0755 0 0`,
    "slink /bin/sh busybox 0777 0 0",
    `file /init ${init} 0755 0 0`,
    ...helperLines,
    `file /etc/bulkhead-role ${roleFile} 0644 0 0`,
  ].join("\n");
  const specFile = join(dir, `${i.role}.spec`);
  writeFileSync(specFile, spec + "\n");
  const cpio = await run(i.genInitCpio, ["-t", "0", specFile], { log: join(dir, `${i.role}.log`), quietStdout: true });
  writeFileSync(`${out}.tmp`, gzipSync(cpio, { level: 9 }));
  renameSync(`${out}.tmp`, out);
  return out;
}
