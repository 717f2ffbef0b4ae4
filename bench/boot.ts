// Boot benchmark: cold boot and snapshot restore per VM, warm start of the
// four-VM setup, idle host CPU per VM (with and without the idle clamp) and
// resident memory. A benchmark, not a test: it reports, it asserts nothing.
//
//   node dist/bench/boot.js [--rounds N] [--idle-seconds S] [--json]
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { APP_VM } from "../guests/app.js";
import { DRIVER_VMS } from "../drivervm/roles.js";
import { Hypervisor, ROLES, type SetupRole } from "../hypervisor/hypervisor.js";
import { SnapshotStore } from "../hypervisor/vm/snapshot.js";
import type { MachineConfig } from "../hypervisor/vm/spec.js";
import { CapabilitySpace } from "../hypervisor/kernel/capability.js";
import { DeviceManager } from "../hypervisor/devices/manager.js";
import { VirtualMachine } from "../hypervisor/vm/vm.js";
import { buildImages, type ImageSet } from "../images/build.js";
import { benchOptions } from "./options.js";

const args = benchOptions(
  "boot",
  [
    "Per VM: cold boot, snapshot save, restore (new worker and spare), idle host CPU with and",
    "without the idle clamp; then the warm start of all four VMs and their resident memory.",
  ],
  {
    rounds: { default: 5, min: 1, value: "N", help: "rounds per figure, medians reported (cold boots: at most 3)" },
    "idle-seconds": { default: 20, min: 1, value: "S", help: "length of each idle CPU window" },
  },
);
const rounds = args.rounds;
const idleSeconds = args["idle-seconds"];
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const tmp = (p: string) => mkdtempSync(join(tmpdir(), `bulkhead-bench-${p}-`));

// The machines as the device manager builds them in a setup.
const devices = new DeviceManager(new CapabilitySpace());
const BASE = { app: APP_VM, ...DRIVER_VMS };
const CONFIGS = Object.fromEntries(
  ROLES.map((role, i) => {
    devices.grantFor(i + 1, role);
    return [role, devices.machineFor(i + 1, BASE[role])];
  }),
) as Record<SetupRole, MachineConfig>;

interface PerVm {
  coldBootMs: number[];
  restoreFreshMs: number[];
  restoreSpareMs: number[];
  snapshotMs: number;
}

async function perVm(images: ImageSet, role: SetupRole): Promise<PerVm> {
  const store = new SnapshotStore(tmp("snap"));
  const vm = new VirtualMachine({ config: CONFIGS[role], images, snapshots: store, logDir: tmp("logs"), spare: false });
  const coldBootMs: number[] = [];
  // Cold boots: the first one also takes the snapshot.
  for (let i = 0; i < Math.min(rounds, 3); i++) {
    if (i > 0) store.discard(role, store.keyFor(CONFIGS[role], images.key));
    await vm.start();
    coldBootMs.push(vm.bootMs!);
    vm.kill();
  }
  await vm.start(); // ensure a snapshot exists (cold, after the discard above)
  const snapshotMs = vm.snapshotMs ?? 0;
  await vm.shutdown();
  const restoreFreshMs: number[] = [];
  const fresh = new VirtualMachine({ config: CONFIGS[role], images, snapshots: store, logDir: tmp("logs"), spare: false });
  for (let i = 0; i < rounds; i++) {
    await fresh.start();
    restoreFreshMs.push(fresh.bootMs!);
    fresh.kill();
  }
  await fresh.shutdown();
  const restoreSpareMs: number[] = [];
  const spared = new VirtualMachine({ config: CONFIGS[role], images, snapshots: store, logDir: tmp("logs") });
  await spared.start();
  for (let i = 0; i < rounds; i++) {
    await new Promise((r) => setTimeout(r, 1500)); // let the spare finish preparing
    spared.kill();
    await spared.start();
    restoreSpareMs.push(spared.bootMs!);
  }
  await spared.shutdown();
  return { coldBootMs, restoreFreshMs, restoreSpareMs, snapshotMs };
}

async function idle(clampIdle: boolean): Promise<{ perVm: Record<string, number>; processCpu: number; rssMiB: number }> {
  const hv = new Hypervisor({ runDir: tmp("run"), clampIdle });
  await hv.up();
  await new Promise((r) => setTimeout(r, 5000)); // settle (spares prepare, first JIT)
  // Each worker thread's own CPU time (schedstat): the event-loop utilisation
  // read from the main thread came out negative or far too high at idle.
  const vm0 = await Promise.all(ROLES.map((role) => hv.vm(role).cpuStatus()));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, idleSeconds * 1000));
  const wall = (performance.now() - t0) * 1000;
  const used = process.cpuUsage(cpu0);
  const vm1 = await Promise.all(ROLES.map((role) => hv.vm(role).cpuStatus()));
  const perVm: Record<string, number> = {};
  ROLES.forEach((role, i) => (perVm[role] = ((vm1[i].cpuMs - vm0[i].cpuMs) * 1000) / wall));
  const rssMiB = process.memoryUsage().rss / 2 ** 20;
  await hv.down();
  return { perVm, processCpu: (used.user + used.system) / wall, rssMiB };
}

async function warmStart(): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const hv = new Hypervisor({ runDir: tmp("run") });
    const t0 = performance.now();
    await hv.up();
    out.push(performance.now() - t0);
    await hv.down();
  }
  return out;
}

const images = await buildImages((m) => log(`images: ${m}`));
const results: Record<string, PerVm> = {};
for (const role of ROLES) {
  log(`${role}: cold boots and restores`);
  results[role] = await perVm(images, role);
}
log("warm start of all four (snapshots present)");
const warm = await warmStart();
log(`idle, ${idleSeconds} s, with the clamp`);
const idleClamped = await idle(true);
log(`idle, ${idleSeconds} s, stock v86 yield`);
const idleStock = await idle(false);

const report = {
  date: new Date().toISOString(),
  rounds,
  idleSeconds,
  perVm: Object.fromEntries(
    ROLES.map((r) => [
      r,
      {
        coldBootMs: median(results[r].coldBootMs),
        snapshotSaveMs: results[r].snapshotMs,
        restoreFreshWorkerMs: median(results[r].restoreFreshMs),
        restoreFromSpareMs: median(results[r].restoreSpareMs),
        restoreFromSpareMaxMs: Math.max(...results[r].restoreSpareMs),
        idleCpuClamped: idleClamped.perVm[r],
        idleCpuStock: idleStock.perVm[r],
      },
    ]),
  ),
  warmStartAllMs: median(warm),
  warmStartAllMaxMs: Math.max(...warm),
  idleProcessCpuClamped: idleClamped.processCpu,
  idleProcessCpuStock: idleStock.processCpu,
  rssMiBAllFourWithSpares: idleClamped.rssMiB,
};

if (args.json) {
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
} else {
  const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
  const ms = (x: number) => `${Math.round(x)} ms`;
  const lines = [
    `Bulkhead boot benchmark, ${report.date} (medians of ${rounds}; cold boots: ${Math.min(rounds, 3)})`,
    "",
    "VM     cold boot  snapshot save  restore (new worker)  restore (spare)  idle CPU clamped  idle CPU stock",
    ...ROLES.map((r) => {
      const v = report.perVm[r] as Record<string, number>;
      return `${r.padEnd(6)} ${ms(v.coldBootMs).padStart(9)}  ${ms(v.snapshotSaveMs).padStart(13)}  ${ms(v.restoreFreshWorkerMs).padStart(20)}  ${ms(v.restoreFromSpareMs).padStart(15)}  ${pct(v.idleCpuClamped).padStart(16)}  ${pct(v.idleCpuStock).padStart(14)}`;
    }),
    "",
    `warm start of all four: ${ms(report.warmStartAllMs)} (max ${ms(report.warmStartAllMaxMs)})`,
    `idle, whole process (4 VMs + hypervisor): ${pct(report.idleProcessCpuClamped)} of a core clamped, ${pct(report.idleProcessCpuStock)} stock`,
    `resident memory, four VMs with their spares: ${Math.round(report.rssMiBAllFourWithSpares)} MiB`,
  ];
  process.stdout.write(lines.join("\n") + "\n");
}
