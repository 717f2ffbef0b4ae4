// The disk path end to end: the app VM's /dev/vda, served by the disk VM's
// stock ata_piix driver, onto a raw image file on the host.
import { createHash } from "node:crypto";
import { openSync, readSync, closeSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hypervisor } from "../../dist/hypervisor/hypervisor.js";
import { eventually, tempDir } from "./helpers.js";

const runDir = tempDir("disk");
const image = join(runDir, "disk.img");
let hv: Hypervisor;

async function up(): Promise<Hypervisor> {
  const h = new Hypervisor({ runDir, diskImage: image, diskSizeBytes: 128 * 2 ** 20 });
  await h.up();
  return h;
}
beforeAll(async () => {
  hv = await up();
});
afterAll(async () => {
  await hv?.down();
});

async function sh(role: string, cmd: string, timeoutMs = 120_000): Promise<string> {
  const r = await hv.vm(role).exec(cmd, timeoutMs);
  if (r.status !== 0) throw new Error(`${role}: \`${cmd}\` exited ${r.status}: ${r.output.toString()}`);
  return r.output.toString();
}

function hostSha256(path: string, bytes: number, offset = 0): string {
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(bytes);
  readSync(fd, buf, 0, bytes, offset);
  closeSync(fd);
  return createHash("sha256").update(buf).digest("hex");
}

describe("the disk path", () => {
  it("gives the app VM /dev/vda of the image's size, and no /dev/sda or ATA driver", async () => {
    expect(await sh("app", "cat /sys/block/vda/size")).toBe(`${(128 * 2 ** 20) / 512}\n`);
    expect(await sh("app", "ls /dev/sda 2>&1 || true")).toMatch(/No such file or directory/);
    expect(await sh("app", "ls /sys/bus/pci/drivers")).not.toMatch(/ata_piix/);
  });

  it("writes 24 MiB of random data through /dev/vda, reads it back, and the image file holds exactly it", async () => {
    const written = (await sh("app", "dd if=/dev/urandom of=/tmp/data bs=1M count=24 2>/dev/null && sha256sum < /tmp/data")).split(" ")[0];
    await sh("app", "dd if=/tmp/data of=/dev/vda bs=64k seek=16 oflag=direct 2>/dev/null && rm /tmp/data");
    const read = (await sh("app", "dd if=/dev/vda bs=64k skip=16 count=384 iflag=direct 2>/dev/null | sha256sum")).split(" ")[0];
    expect(read).toBe(written);
    // Acknowledged means in the file: no flush needed to see it from the host.
    expect(hostSha256(image, 24 * 2 ** 20, 2 ** 20)).toBe(written);
  });

  it("round-trips an ext2 file system with many files", async () => {
    await sh("app", "mkfs.ext2 -q /dev/vda >/dev/null 2>&1 || mkfs.ext2 /dev/vda >/dev/null && mount /dev/vda /mnt");
    await sh("app", "mkdir -p /mnt/d && for i in $(seq 1 150); do head -c $((i * 97)) /dev/urandom > /mnt/d/f$i; done && cd /mnt && sha256sum d/* > /tmp/sums && sync");
    await sh("app", "umount /mnt && echo 3 > /proc/sys/vm/drop_caches && mount /dev/vda /mnt");
    expect(await sh("app", "cd /mnt && sha256sum -c /tmp/sums | grep -c ': OK$'")).toBe("150\n");
    await sh("app", "echo persistent > /mnt/marker && umount /mnt");
  });

  it("keeps the files across down and up, and the image file has them after down", async () => {
    await hv.down();
    hv = await up();
    expect(await sh("app", "mount /dev/vda /mnt && cat /mnt/marker && ls /mnt/d | wc -l && umount /mnt")).toBe("persistent\n150\n");
  });

  it("serves several readers and writers at once", async () => {
    const script = [
      "for i in 1 2 3 4; do (dd if=/dev/urandom of=/tmp/w$i bs=64k count=32 2>/dev/null); done",
      "for i in 1 2 3 4; do (dd if=/tmp/w$i of=/dev/vda bs=64k seek=$((i * 64)) oflag=direct 2>/dev/null &) ; done",
      "for i in 1 2 3 4; do (dd if=/dev/vda of=/dev/null bs=4k count=512 skip=$((i * 1000)) iflag=direct 2>/dev/null &) ; done",
      "wait; sleep 1",
      "for i in 1 2 3 4; do a=$(sha256sum < /tmp/w$i); b=$(dd if=/dev/vda bs=64k skip=$((i * 64)) count=32 iflag=direct 2>/dev/null | sha256sum); [ \"$a\" = \"$b\" ] && echo same; done",
    ].join("; ");
    expect(await sh("app", script)).toBe("same\nsame\nsame\nsame\n");
    const disk = (await hv.status()).disk!;
    expect(disk.frontEnd!.inFlight).toBe(0);
    expect(disk.frontEnd!.requests.write).toBeGreaterThan(0);
    expect((disk.backEnd as { served: { write: number } }).served.write).toBeGreaterThan(0);
    // blkback lays its 513-page window out in frame order (window.h): a few runs, not one per page.
    expect((disk.backEnd as { windowRuns: number }).windowRuns).toBeGreaterThan(0);
    expect((disk.backEnd as { windowRuns: number }).windowRuns).toBeLessThan(32);
  });

  it("refuses a window outside the disk VM's RAM, restarts the lying disk VM, and keeps serving", async () => {
    const before = hv.events.list().length;
    const violations: string[] = [];
    hv.vm("disk").on("violation", (d: string) => violations.push(d));
    // The VM is declared dead as soon as the host refuses the window: the command may get no answer.
    await sh("disk", "printf 'BH1 window-pfns 0 fffff+513\\nBH1 window-end 513 0\\n' > /dev/ttyS1").catch(() => "");
    expect(await eventually(() => violations.length > 0, 5000)).toBe(true);
    expect(violations[0]).toMatch(/^blkback window: frame 0x(fffff|100000|[0-9a-f]+) is outside the VM's \d+ pages$/);
    expect(await eventually(() => hv.events.list().slice(before).some((e) => e.vm === "disk" && e.kind === "restarted"), 10_000)).toBe(true);
    expect(hv.events.list().slice(before).find((e) => e.kind === "fault")?.detail).toMatch(/^violation: blkback window/);
    expect(await sh("app", "dd if=/dev/vda bs=4k count=16 iflag=direct 2>/dev/null | wc -c")).toBe("65536\n");
  });

  it("answers malformed virtio requests from the app VM's own driver with an error, touching nothing, and serves again", async () => {
    const dev = "0000:00:0d.0"; // VIRTIO_BLK_SLOT
    const before = (await hv.status()).disk!.frontEnd!;
    // badvirtio plays the driver: the stock one is unbound first and bound again after.
    const out = await sh(
      "app",
      `echo ${dev} > /sys/bus/pci/drivers/virtio-pci/unbind && badvirtio ${dev}; s=$?; echo ${dev} > /sys/bus/pci/drivers/virtio-pci/bind; exit $s`,
    );
    const cases = Object.fromEntries([...out.matchAll(/^case (\S+) (.*)$/gm)].map((m) => [m[1], m[2]]));
    // Status bytes: 0 OK, 1 IOERR, 2 UNSUPP; 255 is what badvirtio put there (the device never wrote it).
    expect(cases).toEqual({
      "good-read": "used 0 len 513 status 0 data written",
      "past-the-end": "used 0 len 1 status 1 data untouched",
      "unaligned-length": "used 0 len 1 status 1 data untouched",
      "unknown-type": "used 0 len 1 status 2 data untouched",
      // A chain the device cannot use comes back with nothing written, not even the status byte.
      "outside-ram": "used 0 len 0 status 255 data untouched",
      "looping-chain": "used 3 len 0 status 255 data untouched",
    });
    const after = (await hv.status()).disk!.frontEnd!;
    const delta = (code: string) => ((after.refused as Record<string, number>)[code] ?? 0) - ((before.refused as Record<string, number>)[code] ?? 0);
    expect(["out-of-range", "unaligned", "unsupported", "bad-chain"].map(delta)).toEqual([1, 1, 1, 2]);
    // The stock driver is back, and so is the disk.
    expect(await sh("app", "for i in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.1; done; dd if=/dev/vda bs=64k count=16 iflag=direct 2>/dev/null | wc -c")).toBe("1048576\n");
  });

  it("survives garbage and a flood on the disk VM's control line", async () => {
    // Random bytes (with stray doorbells) and a burst of fake replies.
    await sh("disk", "head -c 20000 /dev/urandom > /dev/ttyS1; for i in $(seq 1 300); do echo 'BH1 pong 99999'; done > /dev/ttyS1");
    expect(hv.vm("disk").state).toBe("ready");
    expect(await sh("app", "dd if=/dev/vda bs=64k count=64 iflag=direct 2>/dev/null | wc -c")).toBe("4194304\n");
    expect(await hv.vm("disk").ping()).toBeGreaterThan(0);
  });

  it("detects a hung disk VM by its heartbeat, restarts it, and a write in flight completes with the right data", async () => {
    const before = hv.events.list().length;
    const sum = (await sh("app", "dd if=/dev/urandom of=/tmp/h bs=64k count=32 2>/dev/null && sha256sum < /tmp/h")).split(" ")[0];
    // Freeze blkback (the disk VM's helper and heartbeat responder). Its reply never comes.
    await hv.vm("disk").exec("kill -STOP $(pidof blkback)", 1500).catch(() => {});
    // This write and read queue up behind the frozen helper, then are replayed to its successor.
    const out = await sh("app", "dd if=/tmp/h of=/dev/vda bs=64k seek=1800 oflag=direct 2>/dev/null && dd if=/dev/vda bs=64k skip=1800 count=32 iflag=direct 2>/dev/null | sha256sum", 60_000);
    expect(out.split(" ")[0]).toBe(sum);
    const events = hv.events.list().slice(before).filter((e) => e.vm === "disk");
    expect(events.find((e) => e.kind === "fault")?.detail).toMatch(/^hang: no heartbeat for \d+ ms \(two periods of 1000 ms\)$/);
    expect(events.some((e) => e.kind === "restarted")).toBe(true);
    expect((await hv.status()).disk!.frontEnd!.replayed).toBeGreaterThan(0);
    expect(hostSha256(image, 2 * 2 ** 20, 1800 * 65536)).toBe(sum);
  });

  it("past the restart budget fails the app VM's disk requests with an I/O error, and `restart` brings it back", async () => {
    const small = new Hypervisor({
      runDir: tempDir("budget"),
      roles: ["app", "disk"],
      diskSizeBytes: 16 * 2 ** 20,
      restartPolicy: { maxRestarts: 1, windowMs: 60_000, baseBackoffMs: 0, maxBackoffMs: 0 },
    });
    await small.up();
    try {
      const io = () => small.vm("app").exec("dd if=/dev/vda of=/dev/null bs=4k count=4 iflag=direct 2>&1; echo status=$?", 30_000);
      await small.injectFault("disk", "kill");
      expect(await eventually(() => small.events.list().some((e) => e.vm === "disk" && e.kind === "restarted"), 15_000)).toBe(true);
      expect((await io()).output.toString()).toMatch(/status=0/);
      await small.injectFault("disk", "kill");
      expect(await eventually(() => small.events.list().some((e) => e.kind === "given-up"), 15_000)).toBe(true);
      expect(small.events.list().find((e) => e.kind === "given-up")?.detail).toBe("1 restarts within 60 s");
      // A clear error, at once, instead of a hang.
      const failed = (await io()).output.toString();
      expect(failed).toMatch(/status=1/);
      expect((await small.status()).disk!.frontEnd!.failed).toMatch(/^disk VM failed: 1 restarts within 60 s$/);
      await small.restartVm("disk");
      expect(await eventually(() => small.vm("disk").state === "ready", 15_000)).toBe(true);
      expect((await io()).output.toString()).toMatch(/status=0/);
    } finally {
      await small.down();
    }
  });
});
