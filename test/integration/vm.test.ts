// One VM at a time: cold boot, snapshot restore, and what goes wrong at start.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { APP_VM } from "../../dist/guests/app.js";
import { DRIVER_VMS } from "../../dist/drivervm/roles.js";
import { SnapshotStore } from "../../dist/hypervisor/vm/snapshot.js";
import { PCI_SLOT, type MachineConfig } from "../../dist/hypervisor/vm/spec.js";
import { VirtualMachine, VmError, type VmOptions } from "../../dist/hypervisor/vm/vm.js";
import { buildImages, readManifest } from "../../dist/images/build.js";
import { tempDir, testImages } from "./helpers.js";

const appMachine: MachineConfig = { ...APP_VM, nic: "none", removePciSlots: [PCI_SLOT.ide] };
const diskMachine: MachineConfig = { ...DRIVER_VMS.disk, nic: "none", removePciSlots: [] };

const running: VirtualMachine[] = [];
async function vm(opts: Partial<VmOptions> & { config: MachineConfig }): Promise<VirtualMachine> {
  const v = new VirtualMachine({ images: await testImages(), logDir: tempDir("logs"), ...opts });
  running.push(v);
  return v;
}
afterEach(async () => {
  await Promise.all(running.splice(0).map((v) => v.shutdown()));
});

describe("a VM", () => {
  it("boots cold to ready and runs a command in the guest", async () => {
    const v = await vm({ config: appMachine });
    await v.start();
    expect(v.state).toBe("ready");
    expect(v.bootKind).toBe("cold");
    const r = await v.exec("uname -m; echo err >&2; exit 4");
    expect(r.status).toBe(4);
    expect(r.output.toString()).toBe("i686\nerr\n");
    expect(readFileSync(v.consoleLog, "utf8")).toContain("BULKHEAD-READY app");
  });

  it("restores from its snapshot with the guest clock set to now and answers", async () => {
    const store = new SnapshotStore(tempDir("snap"));
    const v = await vm({ config: diskMachine, snapshots: store });
    await v.start();
    expect(v.bootKind).toBe("cold");
    expect(store.find("disk", store.keyFor(diskMachine, (await testImages()).key))).toBeDefined();
    await new Promise((r) => setTimeout(r, 2500)); // the snapshot's clock falls behind
    v.kill();
    expect(v.state).toBe("stopped");
    await v.start();
    expect(v.bootKind).toBe("restore");
    const r = await v.exec("date +%s");
    expect(Math.abs(Number(r.output.toString()) - Date.now() / 1000)).toBeLessThan(2);
    expect(await v.ping()).toBeGreaterThan(0);
  });

  it("detects a corrupt snapshot, discards it and rebuilds it with a cold boot", async () => {
    const store = new SnapshotStore(tempDir("snap"));
    const key = store.keyFor(diskMachine, (await testImages()).key);
    const first = await vm({ config: diskMachine, snapshots: store, spare: false });
    await first.start();
    await first.shutdown();
    const ref = store.find("disk", key)!;
    const bytes = readFileSync(ref.path);
    bytes.fill(0x5a, 1000, 5000);
    writeFileSync(ref.path, bytes);

    const second = await vm({ config: diskMachine, snapshots: store });
    await second.start();
    expect(second.bootKind).toBe("cold");
    expect(readFileSync(second.consoleLog, "utf8")).toMatch(/snapshot rejected .*does not match its recorded sha256/);
    const rebuilt = store.find("disk", key)!;
    expect(rebuilt.sha256).not.toBe(ref.sha256);
    expect((await second.exec("echo ok")).output.toString()).toBe("ok\n");
  });

  it("fails with the tail of its console when the guest never becomes ready", async () => {
    const v = await vm({ config: appMachine, coldTimeoutMs: 1500 });
    const err = await v.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmError);
    expect((err as VmError).code).toBe("start-timeout");
    expect((err as VmError).message).toMatch(/app VM did not become ready within 1500 ms\n--- last console lines of the app VM ---\n/);
    expect(v.state).toBe("failed");
    expect(v.running).toBe(false);
  });

  it("reports a kernel panic during boot as a failed start", async () => {
    const v = await vm({ config: { ...appMachine, cmdline: `${appMachine.cmdline} rdinit=/no/such/init` } });
    const err = (await v.start().catch((e: unknown) => e)) as VmError;
    expect(err.code).toBe("start-failed");
    expect(err.message).toMatch(/failed while starting: panic: .*Kernel panic - not syncing/);
  });

  it("survives a worker that runs out of memory", async () => {
    const v = await vm({ config: appMachine, heapLimitMiB: 2 });
    const err = (await v.start().catch((e: unknown) => e)) as VmError;
    expect(err.code).toBe("start-failed");
    expect(err.message).toMatch(/ERR_WORKER_OUT_OF_MEMORY/);
    expect(v.state).toBe("failed");
  });

  it("rebuilds a missing image", async () => {
    const before = readManifest()!;
    const path = before.artifacts["initrd/net"].path;
    rmSync(path);
    const images = await buildImages();
    expect(existsSync(images.initrd.net)).toBe(true);
    expect(readManifest()!.artifacts["initrd/net"].sha256).toBe(before.artifacts["initrd/net"].sha256);
    expect(join(images.initrd.net)).toBe(path);
  });
});
