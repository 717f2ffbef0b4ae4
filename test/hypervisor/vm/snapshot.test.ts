import { describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SnapshotStore } from "../../../dist/hypervisor/vm/snapshot.js";

describe("SnapshotStore.prune", () => {
  it("keeps the snapshots of the current base and removes the rest, sparing young files without a record", () => {
    const dir = mkdtempSync(join(tmpdir(), "bulkhead-snap-"));
    const store = new SnapshotStore(dir);
    const current = store.baseFor("images-now");
    expect(store.baseFor("images-before")).not.toBe(current);
    const put = (role: string, key: string, base: string | undefined, bytes: number) => {
      writeFileSync(store.prepare(role, key), Buffer.alloc(bytes));
      store.record(role, key, "0".repeat(64), bytes, base);
    };
    put("app", "aaaa", current, 1000);
    put("disk", "bbbb", current, 2000);
    put("app", "cccc", store.baseFor("images-before"), 3000); // older images
    put("net", "dddd", undefined, 4000); // recorded before snapshots named their base
    writeFileSync(join(dir, "pci-eeee.state.json"), JSON.stringify({ format: "snapshot-v2", key: "eeee", base: current })); // record without its state
    const old = new Date(Date.now() - 3600_000);
    writeFileSync(join(dir, "disk-ffff.state"), Buffer.alloc(5000)); // an unfinished one, an hour old
    utimesSync(join(dir, "disk-ffff.state"), old, old);
    writeFileSync(join(dir, "net-9999.state"), Buffer.alloc(6000)); // one another process is writing now

    const r = store.prune(current);
    expect(readdirSync(dir).sort()).toEqual(["app-aaaa.state", "app-aaaa.state.json", "disk-bbbb.state", "disk-bbbb.state.json", "net-9999.state"]);
    expect(r.removed).toBe(3);
    expect(r.kept).toBe(3);
    expect(r.keptBytes).toBe(1000 + 2000 + 6000);
    expect(r.removedBytes).toBeGreaterThanOrEqual(3000 + 4000 + 5000);
    expect(store.find("app", "aaaa")).toBeDefined();
    expect(store.find("app", "cccc")).toBeUndefined();
  });

  it("does nothing when there is no snapshot folder", () => {
    const store = new SnapshotStore(join(tmpdir(), "bulkhead-no-such-folder-" + process.pid));
    expect(store.prune(store.baseFor("x"))).toEqual({ removed: 0, removedBytes: 0, kept: 0, keptBytes: 0 });
    expect(existsSync(store.dir)).toBe(false);
  });
});
