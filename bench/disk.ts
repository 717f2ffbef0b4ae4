// Disk benchmark: the same block workloads, side by side in one run, in the
// app VM through the disk VM (virtio-blk -> channel -> blkback -> ata_piix)
// and in a single baseline VM with the same image attached as IDE. A
// benchmark, not a test: it reports, it asserts nothing.
//
//   node dist/bench/disk.js [--rounds N] [--mib M] [--warmup SECONDS] [--json]
//
// v86 compiles guest code to wasm as it runs hot, and the path through two
// VMs takes far longer to reach its speed than one VM: runs of the same
// workload kept getting faster for tens of seconds. So both sides first run
// the workloads in turn for --warmup seconds each, and then every workload
// once more before its measured rounds. Beside MB/s and IOPS, each row
// reports the guest instructions per request in every VM (v86's counter:
// guest work that host noise does not move) and each VM's worker CPU time
// per request (the thread's time on a core, from Linux's schedstat), which
// together say where a request's time goes. The path's two workers together
// against the baseline's one give a ceiling: with four in flight on two
// cores, the path can serve at most 2 x (direct CPU / path CPU) of the
// baseline's rate; one at a time, the VMs take turns and the factor is 1.
// That ceiling counts only the VMs' workers: the rest of the process (V8's
// compiler threads, which keep compiling v86's newly hot guest code, its
// garbage collector, the main thread) shares the same two cores, so each row
// also reports the whole process's CPU per request.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASELINE_VM } from "../guests/baseline.js";
import { Hypervisor } from "../hypervisor/hypervisor.js";
import { SnapshotStore } from "../hypervisor/vm/snapshot.js";
import { VirtualMachine } from "../hypervisor/vm/vm.js";
import { ensureImage } from "../drivervm/disk/image-file.js";
import { buildImages } from "../images/build.js";
import { cacheDir } from "../images/paths.js";
import { benchOptions } from "./options.js";
import { warmUp } from "./warm-up.js";
import { measureWork } from "./work.js";
import { medianBy, pairedRatio } from "./median.js";

const args = benchOptions(
  "disk",
  [
    "Block workloads side by side in one run: in the app VM through the disk VM, and in a baseline",
    "VM with the same image attached as IDE. Sequential 64 KiB writes and reads, random 4 KiB reads,",
    "one request at a time and four in flight. Prints medians, ratios and the work per request.",
  ],
  {
    rounds: { default: 3, min: 1, value: "N", help: "measured rounds per workload and side" },
    mib: { default: 32, min: 1, value: "M", help: "MiB per sequential run; random runs read M/4 MiB" },
    warmup: { default: 30, min: 0, value: "SECONDS", help: "run the workloads in turn on both sides for this long first" },
  },
);
const { rounds, mib } = args;
const warmupSeconds = args.warmup;
const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);
const tmp = (p: string) => mkdtempSync(join(tmpdir(), `bulkhead-bench-${p}-`));

interface Workload {
  name: string;
  mode: "seqread" | "seqwrite" | "randread";
  block: number;
  bytes: number;
  inflight: number;
}
const WORKLOADS: Workload[] = [];
for (const inflight of [1, 4]) {
  WORKLOADS.push({ name: `seq write 64K x${inflight}`, mode: "seqwrite", block: 65536, bytes: mib * 2 ** 20, inflight });
  WORKLOADS.push({ name: `seq read 64K x${inflight}`, mode: "seqread", block: 65536, bytes: mib * 2 ** 20, inflight });
  WORKLOADS.push({ name: `rand read 4K x${inflight}`, mode: "randread", block: 4096, bytes: (mib / 4) * 2 ** 20, inflight });
}

interface Result {
  mbps: number;
  iops: number;
  /**
   * Per VM that served the request (the one that ran blkbench first), per
   * request: guest instructions, the worker's CPU microseconds, and its
   * event loop's busy microseconds (CPU plus time spent waiting for a core),
   * and the part of its CPU spent looking for work (VirtualMachine.cpuStatus).
   */
  perRequest: Array<{ role: string; instructions: number; cpuUs: number; busyUs: number; spinUs: number }>;
  /**
   * The whole process's CPU microseconds per request (every thread: the VMs'
   * workers, V8's compiler and garbage-collector threads, the main thread).
   */
  processUs: number;
}

/** Runs a workload in `runner`, counting the work of every VM in `vms` (the runner first). */
async function run(vms: VirtualMachine[], device: string, w: Workload): Promise<Result> {
  const runner = vms[0];
  const { result: r, work } = await measureWork(vms, () => runner.exec(`blkbench ${device} ${w.mode} ${w.block} ${w.bytes} ${w.inflight} 7`, 600_000));
  const out = r.output.toString().trim();
  if (r.status !== 0) throw new Error(`blkbench in the ${runner.role} VM failed (${r.status}): ${out}`);
  const j = JSON.parse(out.split("\n").pop()!) as { mbps: number; iops: number; requests: number };
  return {
    mbps: j.mbps,
    iops: j.iops,
    perRequest: work.vms.map((vm) => ({
      role: vm.role,
      instructions: vm.instructions / j.requests,
      cpuUs: (1000 * vm.cpuMs) / j.requests,
      busyUs: (1000 * vm.busyMs) / j.requests,
      spinUs: (1000 * vm.spinMs) / j.requests,
    })),
    processUs: (1000 * work.processMs) / j.requests,
  };
}

const images = await buildImages((m) => log(`images: ${m}`));
const dir = tmp("disk");
const image = join(dir, "disk.img");
ensureImage(image, 512 * 2 ** 20);
log(`image ${image}; ${mib} MiB per sequential run, ${rounds} rounds after a warm-up`);

const hv = new Hypervisor({ runDir: tmp("run"), diskImage: image });
await hv.up();
const app = hv.vm("app");
const diskVm = hv.vm("disk");
const baseline = new VirtualMachine({
  config: BASELINE_VM,
  images,
  snapshots: new SnapshotStore(join(cacheDir(), "snapshots")),
  logDir: join(dir, "logs"),
  devices: [{ kind: "physical-disk", imagePath: image }],
  snapshotShape: [{ kind: "physical-disk", sizeBytes: 512 * 2 ** 20 }],
  spare: false,
});
await baseline.start();

const via = [app, diskVm];
const alone = [baseline];
await warmUp(
  warmupSeconds,
  { via: (i) => run(via, "/dev/vda", WORKLOADS[i % WORKLOADS.length]), direct: (i) => run(alone, "/dev/sda", WORKLOADS[i % WORKLOADS.length]) },
  (spent) => log(`warm-up: ${spent.via.toFixed(0)} s via the disk VM, ${spent.direct.toFixed(0)} s direct (of ${warmupSeconds} s each)`),
);

const rows: Array<{ workload: string; viaDiskVm: Result; direct: Result; ratioMbps: number; ratioIops: number; pairedRatio: number }> = [];
const statusBefore = (await hv.status()).disk;
for (const w of WORKLOADS) {
  log(w.name);
  await run(via, "/dev/vda", w); // one more unmeasured run of this very workload
  await run(alone, "/dev/sda", w);
  const remote: Result[] = [];
  const direct: Result[] = [];
  for (let i = 0; i < rounds; i++) {
    remote.push(await run(via, "/dev/vda", w));
    direct.push(await run(alone, "/dev/sda", w));
  }
  // The median round of each side, by MB/s; the paired ratio moves less with the machine's phases.
  const r = medianBy(remote, (x) => x.mbps);
  const d = medianBy(direct, (x) => x.mbps);
  rows.push({ workload: w.name, viaDiskVm: r, direct: d, ratioMbps: r.mbps / d.mbps, ratioIops: r.iops / d.iops, pairedRatio: pairedRatio(remote, direct, (x) => x.mbps) });
}
const disk = (await hv.status()).disk!;
await baseline.shutdown();
await hv.down();

const fe = disk.frontEnd!;
const be = disk.backEnd as { serviceMs: number; serviceCount: number };
const report = {
  date: new Date().toISOString(),
  rounds,
  mib,
  warmupSeconds,
  rows,
  latency: {
    frontEndRoundTripMs: fe.meanRoundTripMs,
    backEndServiceMs: be.serviceCount ? be.serviceMs / be.serviceCount : 0,
    requests: fe.completed - (statusBefore?.frontEnd?.completed ?? 0),
  },
};
if (args.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
else {
  const f = (x: number, d = 1) => x.toFixed(d);
  process.stdout.write(
    [
      `Bulkhead disk benchmark, ${report.date}: medians of ${rounds} after a ${warmupSeconds} s warm-up per side, ${mib} MiB sequential, ${mib / 4} MiB random`,
      "",
      "workload             via disk VM MB/s  IOPS   direct MB/s  IOPS   ratio  paired",
      ...rows.map(
        (r) =>
          `${r.workload.padEnd(20)} ${f(r.viaDiskVm.mbps).padStart(16)} ${f(r.viaDiskVm.iops, 0).padStart(6)}  ${f(r.direct.mbps).padStart(11)} ${f(r.direct.iops, 0).padStart(6)}  ${f(r.ratioMbps, 2).padStart(5)}  ${f(r.pairedRatio, 2).padStart(6)}`,
      ),
      "ratio: of the medians; paired: the median of each round's ratio (the two sides measured back to back).",
      "",
      "per request (same median rounds): guest instructions / worker CPU microseconds",
      "workload             app VM           disk VM          direct (baseline VM)  path CPU / direct  ceiling",
      ...rows.map((r, i) => {
        const cell = (x: { instructions: number; cpuUs: number }) => `${f(x.instructions / 1000, 1)}k / ${f(x.cpuUs, 0)} us`.padEnd(17);
        const [a, d] = r.viaDiskVm.perRequest;
        const cpuRatio = (a.cpuUs + d.cpuUs) / r.direct.perRequest[0].cpuUs;
        const cores = WORKLOADS[i].inflight > 1 ? 2 : 1;
        return `${r.workload.padEnd(20)} ${cell(a)}${cell(d)}${cell(r.direct.perRequest[0]).padEnd(22)}${f(cpuRatio, 2).padStart(17)}  ${f(cores / cpuRatio, 2).padStart(7)}`;
      }),
      "ceiling: the best ratio that CPU allows. One request at a time the two VMs take turns (direct / path);",
      "with four in flight they can work at once, one per core (2 x direct / path).",
      "",
      "whole process CPU microseconds per request (same median rounds), and the part outside the measured",
      "VMs' workers: V8's compiler threads (v86 keeps turning newly hot guest code into wasm), its garbage",
      "collector, the main thread and the idle VMs. The two cores are shared by all of it.",
      "workload             via disk VM (outside)  spin  direct (outside)   via / direct  2-core bound  without spin",
      ...rows.map((r, i) => {
        const outside = (x: Result) => x.processUs - x.perRequest.reduce((sum, vm) => sum + vm.cpuUs, 0);
        const cell = (x: Result) => `${f(x.processUs, 0)} (${f(outside(x), 0)})`;
        const spin = r.viaDiskVm.perRequest.reduce((sum, vm) => sum + vm.spinUs, 0);
        // The path's rate if the whole process had both cores to itself, over the direct rate measured.
        const bound = (us: number) => (WORKLOADS[i].inflight > 1 ? f(2e6 / us / r.direct.iops, 2) : "");
        return `${r.workload.padEnd(20)} ${cell(r.viaDiskVm).padEnd(22)} ${f(spin, 0).padStart(4)}  ${cell(r.direct).padEnd(18)} ${f(r.viaDiskVm.processUs / r.direct.processUs, 2).padStart(12)}  ${bound(r.viaDiskVm.processUs).padStart(12)}  ${bound(r.viaDiskVm.processUs - spin).padStart(12)}`;
      }),
      "2-core bound (four in flight): the ratio the path would reach if the whole process had both cores to itself",
      "(2 s of CPU per second over its CPU per request), against the direct rate measured. spin: the part of the",
      "path's CPU that its two workers spent looking for work, not doing it (the app VM's worker polling its",
      "channels while its guest halts, blkback looking at an empty ring). The bound counts spin as used, so a path",
      "that spins whenever it waits reaches it by construction; 'without spin' leaves it out, which is optimistic:",
      "a spinning worker still holds a core that V8's threads and the main thread could have used.",
      "",
      `mean host round trip of a request (front end -> disk VM -> front end): ${f(report.latency.frontEndRoundTripMs, 3)} ms`,
      `  of which in the disk VM (ring -> blkback -> ata_piix -> image file -> reply): ${f(report.latency.backEndServiceMs, 3)} ms`,
    ].join("\n") + "\n",
  );
}
