// The four-VM setup: app, disk, net, pci, each a real Linux in v86.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlClient } from "../../dist/hypervisor/control/client.js";
import { ControlServer } from "../../dist/hypervisor/control/server.js";
import { Hypervisor, type StatusReport } from "../../dist/hypervisor/hypervisor.js";
import { eventually, hasCapSysNice, tempDir } from "./helpers.js";

let hv: Hypervisor;

beforeAll(async () => {
  hv = new Hypervisor({ runDir: tempDir("setup") });
  await hv.up();
});
afterAll(async () => {
  await hv?.down();
});

/** Lists, per PCI driver, the functions bound to it: "ata_piix: 0000:00:1e.0". */
const BOUND = 'for d in /sys/bus/pci/drivers/*; do echo "$(basename $d): $(ls $d | grep : | tr "\\n" " ")"; done';

async function run(role: string, cmd: string): Promise<string> {
  const r = await hv.vm(role).exec(cmd);
  expect(r.status).toBe(0);
  return r.output.toString();
}

describe("the four-VM setup", () => {
  it("starts app, disk, net and pci VMs, each ready and answering", async () => {
    expect((await hv.status()).vms.map((v) => [v.role, v.state])).toEqual([
      ["app", "ready"],
      ["disk", "ready"],
      ["net", "ready"],
      ["pci", "ready"],
    ]);
    for (const role of ["app", "disk", "net", "pci"]) expect(await run(role, "uname -m; hostname")).toBe(`i686\n${role}\n`);
  });

  it("gives the app VM no physical disk, no NIC and no disk or NIC driver: only its paravirtual /dev/vda and eth0", async () => {
    expect(await run("app", "ls /sys/block | grep -E '^(sd|hd|vd)' || true")).toBe("vda\n");
    expect(await run("app", "ls /sys/class/net")).toBe("eth0\nlo\n");
    expect(await run("app", "basename $(readlink /sys/class/net/eth0/device/driver)")).toBe("virtio_net\n");
    const bound = await run("app", BOUND);
    // Only the paravirtual transport binds anything; no ata_piix or ne2k-pci at all.
    expect(bound).not.toMatch(/^(ata_piix|ne2k-pci): 0000/m);
    expect(bound).toMatch(/^virtio-pci: 0000:00:0c\.0 0000:00:0d\.0 0000:00:0e\.0 $/m);
    expect(bound.match(/^[^:]+: 0000/gm)).toEqual(["virtio-pci: 0000"]);
    const ids = await run("app", "cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device | tr '\\n' ' '");
    expect(ids).not.toContain("0x7010");
    expect(ids).not.toContain("0x8029");
  });

  it("binds the stock ata_piix driver in the disk VM and ne2k-pci in the net VM, and nothing else", async () => {
    const disk = await run("disk", BOUND);
    expect(disk).toMatch(/^ata_piix: 0000:00:1e\.0 $/m);
    expect(disk).not.toMatch(/^ne2k-pci: 0000/m);
    expect(await run("disk", "ls /sys/block | grep ^sd || true")).toBe("sda\n"); // the physical disk
    const net = await run("net", BOUND);
    expect(net).toMatch(/^ne2k-pci: 0000:00:05\.0 $/m);
    expect(net).not.toMatch(/^ata_piix: 0000/m);
    // eth0 is the NE2000, which netback reaches through a packet socket: no bridge, no TAP.
    expect(await run("net", "ls /sys/class/net | tr '\\n' ' '")).toBe("eth0 lo ");
  });

  it("has the PCI VM report the machine's inventory, with the IDE controller and the NE2000", async () => {
    const inv = (await hv.status()).inventory!;
    const find = (vendor: number, device: number) => inv.functions.find((f) => f.vendor === vendor && f.device === device);
    expect(find(0x8086, 0x7010)).toMatchObject({ bdf: "0000:00:1e.0", classCode: 0x010180 });
    expect(find(0x10ec, 0x8029)).toMatchObject({ bdf: "0000:00:05.0", classCode: 0x020000 });
    expect(find(0x10ec, 0x8029)!.bars).toEqual([{ kind: "io", start: expect.any(Number), size: 0x20 }]);
    expect((await hv.status()).devices.map((d) => [d.name, d.owner, d.bdf])).toEqual([
      ["ide", "disk", "0000:00:1e.0"],
      ["ne2k", "net", "0000:00:05.0"],
    ]);
    // No device driver is bound in the PCI VM: it holds config space only
    // (virtio-pci is the transport of its own control channel device).
    expect((await run("pci", BOUND)).match(/: 0000\S+/g)).toEqual([": 0000:00:0c.0"]);
  });

  it("reboots a VM whose worker died and it answers again", async () => {
    const disk = hv.vm("disk");
    const before = hv.events.list().length;
    disk.killWorker();
    const restarted = () => hv.events.list().slice(before).some((e) => e.vm === "disk" && e.kind === "restarted");
    expect(await eventually(restarted, 15_000)).toBe(true);
    const events = hv.events.list().slice(before).filter((e) => e.vm === "disk");
    expect(events.find((e) => e.kind === "fault")?.detail).toBe("worker-exit: worker exited with code 70");
    expect(disk.state).toBe("ready");
    expect(await run("disk", "echo back")).toBe("back\n");
  });

  it("reboots a driver VM whose kernel panicked", async () => {
    const net = hv.vm("net");
    const before = hv.events.list().length;
    await net.exec("echo c > /proc/sysrq-trigger", 2000).catch(() => {});
    const restarted = () => hv.events.list().slice(before).some((e) => e.vm === "net" && e.kind === "restarted");
    expect(await eventually(restarted, 15_000)).toBe(true);
    expect(hv.events.list().slice(before).find((e) => e.kind === "fault")?.detail).toMatch(/^panic: .*Kernel panic - not syncing/);
    expect(await run("net", "echo back")).toBe("back\n");
  });

  it("restarts the PCI VM after a panic and after a worker kill, and it reports the inventory again", async () => {
    for (const fault of ["panic", "kill"] as const) {
      const before = hv.events.list().length;
      const reportedBefore = (await hv.status()).inventory!.reportedAt;
      await hv.injectFault("pci", fault);
      const again = () => hv.events.list().slice(before).some((e) => e.vm === "pci" && e.kind === "inventory");
      expect(await eventually(again, 15_000)).toBe(true);
      const events = hv.events.list().slice(before).filter((e) => e.vm === "pci");
      expect(events.find((e) => e.kind === "fault")?.detail).toMatch(fault === "panic" ? /^panic: / : /^worker-exit: /);
      const inv = (await hv.status()).inventory!;
      expect(inv.reportedAt).not.toBe(reportedBefore);
      expect(inv.functions.some((f) => f.vendor === 0x10ec && f.device === 0x8029)).toBe(true);
    }
  });

  it("refuses a second setup in the same run folder (it would share the disk image)", async () => {
    await expect(new Hypervisor({ runDir: hv.runDir }).up()).rejects.toThrow(
      `another Bulkhead setup (pid ${process.pid}) is running in ${hv.runDir}`,
    );
  });

  it("serves status and commands to another process over the control API", async () => {
    let stopped = false;
    const server = new ControlServer(hv, () => (stopped = true));
    await server.listen();
    try {
      const client = await ControlClient.connect(hv.runDir);
      const status = await client.request<StatusReport>("status");
      expect(status.vms).toHaveLength(4);
      expect(status.vms.every((v) => v.bootMs !== null && v.memoryMiB > 0)).toBe(true);
      // Every VM's worker runs at nice -10 where the process may set it (CAP_SYS_NICE, as root in CI),
      // and so does the session's group where the kernel groups by session.
      if (hasCapSysNice()) {
        expect(status.vms.map((v) => v.nice)).toEqual([-10, -10, -10, -10]);
        if (status.sessionNice !== null) expect(status.sessionNice).toBeLessThanOrEqual(-10);
      } else expect(status.vms.every((v) => v.nice !== null)).toBe(true);
      const r = await client.request<{ status: number; output: string }>("exec", { command: "echo $((6*7))" });
      expect(r).toEqual({ status: 0, output: Buffer.from("42\n").toString("base64") });
      await expect(client.request("exec", {})).rejects.toThrow("exec needs a command");
      await expect(client.request("reboot", { vm: "nope" })).rejects.toThrow("no nope VM in this setup");
      client.close();
      expect(stopped).toBe(false);
    } finally {
      await server.close();
    }
  });
});
