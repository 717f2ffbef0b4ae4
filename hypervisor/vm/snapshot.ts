// Pristine snapshots: one per role, taken right after the first cold boot
// reached ready, keyed by the hash of everything that shaped the machine
// (images, v86 version, machine config). A stale key is never looked up;
// a corrupt file fails its sha256 in the worker and is discarded.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { sha256 } from "../../images/hash.js";
import { installedV86Version } from "../v86/adapter.js";
import type { MachineConfig } from "./spec.js";

const FORMAT = "snapshot-v2";

export interface SnapshotRef {
  path: string;
  sha256: string;
}

interface SnapshotMeta {
  format: string;
  role: string;
  key: string;
  sha256: string;
  bytes: number;
  created: string;
}

export class SnapshotStore {
  constructor(readonly dir: string) {}

  /** `shape`: whatever else the machine's state depends on (devices, the disk's size). */
  keyFor(config: MachineConfig, imagesKey: string, shape: unknown = null): string {
    return sha256(FORMAT, imagesKey, installedV86Version(), JSON.stringify(config), JSON.stringify(shape)).slice(0, 16);
  }

  pathFor(role: string, key: string): string {
    return join(this.dir, `${role}-${key}.state`);
  }

  find(role: string, key: string): SnapshotRef | undefined {
    const path = this.pathFor(role, key);
    try {
      const meta = JSON.parse(readFileSync(`${path}.json`, "utf8")) as Partial<SnapshotMeta>;
      if (meta.format !== FORMAT || meta.key !== key || typeof meta.sha256 !== "string" || !existsSync(path)) return undefined;
      return { path, sha256: meta.sha256 };
    } catch {
      return undefined;
    }
  }

  prepare(role: string, key: string): string {
    mkdirSync(this.dir, { recursive: true });
    return this.pathFor(role, key);
  }

  record(role: string, key: string, digest: string, bytes: number): void {
    const meta: SnapshotMeta = { format: FORMAT, role, key, sha256: digest, bytes, created: new Date().toISOString() };
    const path = `${this.pathFor(role, key)}.json`;
    writeFileSync(`${path}.tmp`, JSON.stringify(meta) + "\n");
    renameSync(`${path}.tmp`, path);
  }

  discard(role: string, key: string): void {
    const path = this.pathFor(role, key);
    rmSync(path, { force: true });
    rmSync(`${path}.json`, { force: true });
  }
}
