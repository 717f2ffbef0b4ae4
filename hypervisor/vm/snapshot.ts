// Pristine snapshots: one per role, taken right after the first cold boot
// reached ready, keyed by the hash of everything that shaped the machine
// (images, v86 version, machine config). A stale key is never looked up;
// a corrupt file fails its sha256 in the worker and is discarded.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, renameSync } from "node:fs";
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
  /** What the snapshot was made from (images and v86, see baseFor): prune keeps only the current one's. */
  base?: string;
}

export class SnapshotStore {
  constructor(readonly dir: string) {}

  /** `shape`: whatever else the machine's state depends on (devices, the disk's size). */
  keyFor(config: MachineConfig, imagesKey: string, shape: unknown = null): string {
    return sha256(this.baseFor(imagesKey), JSON.stringify(config), JSON.stringify(shape)).slice(0, 16);
  }

  /** The part of every key that images and v86 make: snapshots of another base can never be used again. */
  baseFor(imagesKey: string): string {
    return sha256(FORMAT, imagesKey, installedV86Version()).slice(0, 16);
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

  record(role: string, key: string, digest: string, bytes: number, base?: string): void {
    const meta: SnapshotMeta = { format: FORMAT, role, key, sha256: digest, bytes, created: new Date().toISOString(), base };
    const path = `${this.pathFor(role, key)}.json`;
    writeFileSync(`${path}.tmp`, JSON.stringify(meta) + "\n");
    renameSync(`${path}.tmp`, path);
  }

  /**
   * Removes every snapshot not made from `base` (older images, another v86,
   * an older format, no record of its base) and what is left of unfinished
   * ones, and says what went. Such a snapshot's key can never come up again;
   * one still wanted, say by another checkout, is made again on its next cold
   * boot. A file without a record that is younger than `graceMs` may be a
   * snapshot another process is writing now: it stays.
   */
  prune(base: string, graceMs = 10 * 60_000): { removed: number; removedBytes: number; kept: number; keptBytes: number } {
    const out = { removed: 0, removedBytes: 0, kept: 0, keptBytes: 0 };
    if (!existsSync(this.dir)) return out;
    const names = readdirSync(this.dir);
    const present = new Set(names);
    const stat = (name: string) => {
      try {
        return statSync(join(this.dir, name));
      } catch {
        return undefined;
      }
    };
    const verdict = new Map<string, "keep" | "stale">();
    for (const name of names) {
      if (!name.endsWith(".state.json")) continue;
      const state = name.slice(0, -".json".length);
      let meta: Partial<SnapshotMeta> | undefined;
      try {
        meta = JSON.parse(readFileSync(join(this.dir, name), "utf8")) as Partial<SnapshotMeta>;
      } catch {
        continue; // half-written or damaged: judged by its age below
      }
      const v = meta.format === FORMAT && meta.base === base && present.has(state) ? "keep" : "stale";
      verdict.set(name, v).set(state, v);
    }
    const now = Date.now();
    for (const name of names) {
      const st = stat(name);
      if (!st?.isFile()) continue;
      const v = verdict.get(name) ?? (now - st.mtimeMs < graceMs ? "keep" : "stale");
      const isState = name.endsWith(".state");
      if (v === "keep") {
        if (isState) {
          out.kept++;
          out.keptBytes += st.size;
        }
        continue;
      }
      rmSync(join(this.dir, name), { force: true });
      if (isState) out.removed++;
      out.removedBytes += st.size;
    }
    return out;
  }

  discard(role: string, key: string): void {
    const path = this.pathFor(role, key);
    rmSync(path, { force: true });
    rmSync(`${path}.json`, { force: true });
  }
}
