// Every fault kind, injected for real into the disk VM and the net VM while
// the app VM does I/O: the monitor detects it with the expected detector,
// the VM is restored, and the app VM's work completes with correct data.
import { createHash, randomBytes } from "node:crypto";
import { closeSync, openSync, readSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Hypervisor } from "../../dist/hypervisor/hypervisor.js";
import type { InjectedFault } from "../../dist/hypervisor/control/protocol.js";
import { eventually, tempDir } from "./helpers.js";

const runDir = tempDir("faults");
const image = join(runDir, "disk.img");
const FILE = randomBytes(4 * 2 ** 20);
const FILE_SHA = createHash("sha256").update(FILE).digest("hex");
let hv: Hypervisor;
let http: Server;
let url = "";

/** What the monitor should name as the detector of each kind (flip: whatever the corrupted driver does). */
const DETECTOR: Record<InjectedFault, string | null> = { panic: "panic", flip: null, hang: "hang", reset: "reset", kill: "worker-exit", garbage: "violation" };
const KINDS = Object.keys(DETECTOR) as InjectedFault[];

beforeAll(async () => {
  http = createServer((_req, res) => res.end(FILE));
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  url = `http://10.0.2.2:${(http.address() as AddressInfo).port}/file`;
  hv = new Hypervisor({
    runDir,
    roles: ["app", "disk", "net"],
    diskImage: image,
    diskSizeBytes: 64 * 2 ** 20,
    heartbeatMs: 250,
    restartPolicy: { maxRestarts: 100, windowMs: 60_000, baseBackoffMs: 0, maxBackoffMs: 0 },
  });
  await hv.up();
  for (let i = 0; i < 60; i++) {
    if ((await hv.vm("app").exec("ip route", 5000)).output.toString().includes("default via")) break;
    await new Promise((r) => setTimeout(r, 500));
  }
}, 180_000);

afterAll(async () => {
  await hv?.down();
  http?.close();
});

/** Injects a fault and waits until the VM was restarted (or, for a flip that did nothing, a few seconds). */
async function inject(role: "disk" | "net", kind: InjectedFault): Promise<{ detector: string | null }> {
  const n0 = hv.events.list().length;
  await hv.injectFault(role, kind);
  const restarted = () => hv.events.list().slice(n0).some((e) => e.vm === role && e.kind === "restarted");
  const ok = await eventually(restarted, kind === "flip" ? 4000 : 10_000);
  const fault = hv.events.list().slice(n0).find((e) => e.vm === role && e.kind === "fault");
  if (kind !== "flip") expect(ok).toBe(true);
  // A flip whose bits never ran leaves the VM as it was; restart it so the next test starts clean.
  if (kind === "flip" && !fault) await hv.restartVm(role);
  expect(await eventually(() => hv.vm(role).state === "ready", 10_000)).toBe(true);
  return { detector: fault ? fault.detail!.split(":")[0] : null };
}

describe("faults in the disk VM during running I/O", () => {
  for (const kind of KINDS) {
    it(`${kind}: ${DETECTOR[kind] ? `detected by ${DETECTOR[kind]}, the VM restored` : "whatever the corrupted driver does"}, and every acknowledged write is intact`, async () => {
      const app = hv.vm("app");
      const load = app.exec(`faultload /dev/vda 256 ${KINDS.indexOf(kind) + 1}`, 120_000);
      await new Promise((r) => setTimeout(r, 700));
      const { detector } = await inject("disk", kind);
      if (DETECTOR[kind]) expect(detector).toBe(DETECTOR[kind]);
      await new Promise((r) => setTimeout(r, 700));
      await app.exec("kill -TERM $(pidof faultload)", 10_000);
      const out = (await load).output.toString();
      const done = /done writes=(\d+) reads=(\d+) errors=(\d+) corrupt=(\d+)/.exec(out);
      expect(done, out.slice(-400)).not.toBeNull();
      expect(Number(done![1])).toBeGreaterThan(5);
      expect({ errors: Number(done![3]), corrupt: Number(done![4]) }).toEqual({ errors: 0, corrupt: 0 });
      // The image file holds the last acknowledged write of every block.
      const fd = openSync(image, "r");
      const head = Buffer.alloc(12);
      let blocks = 0;
      for (const m of out.matchAll(/^block (\d+) (\d+)$/gm)) {
        readSync(fd, head, 0, 12, Number(m[1]) * 65536);
        expect([head.readUInt32LE(0), head.readUInt32LE(4), head.readUInt32LE(8)]).toEqual([0x4c464842, Number(m[1]), Number(m[2])]);
        blocks++;
      }
      closeSync(fd);
      expect(blocks).toBeGreaterThan(0);
    });
  }
});

describe("faults in the net VM during a download", () => {
  for (const kind of KINDS) {
    it(`${kind}: ${DETECTOR[kind] ? `detected by ${DETECTOR[kind]}, the VM restored` : "whatever the corrupted driver does"}, and the download completes intact`, async () => {
      const download = hv.vm("app").exec(`wget -q -O - ${url} | sha256sum`, 120_000);
      await new Promise((r) => setTimeout(r, 400));
      const { detector } = await inject("net", kind);
      if (DETECTOR[kind]) expect(detector).toBe(DETECTOR[kind]);
      expect((await download).output.toString().split(" ")[0]).toBe(FILE_SHA);
    });
  }
});
