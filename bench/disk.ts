// Disk benchmark: the same block workloads, side by side in one run, in the
// app VM through the disk VM (virtio-blk -> channel -> blkback -> ata_piix)
// and in a single baseline VM with the same image attached as IDE. A
// benchmark, not a test: it reports, it asserts nothing.
//
//   node dist/bench/disk.js [--rounds N] [--mib M] [--json]
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BASELINE_VM } from "../guests/baseline.js";
import { Hypervisor } from "../hypervisor/hypervisor.js";
import { SnapshotStore } from "../hypervisor/vm/snapshot.js";
import { VirtualMachine } from "../hypervisor/vm/vm.js";
import { ensureImage } from "../drivervm/disk/image-file.js";
import { buildImages } from "../images/build.js";
import { cacheDir } from "../images/paths.js";

const { values: args } = parseArgs({
  options: { rounds: { type: "string", default: "3" }, mib: { type: "string", default: "32" }, json: { type: "boolean", default: false } },
});
const rounds = Number(args.rounds);
const mib = Number(args.mib);
const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
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
}

async function run(vm: VirtualMachine, device: string, w: Workload): Promise<Result> {
  const r = await vm.exec(`blkbench ${device} ${w.mode} ${w.block} ${w.bytes} ${w.inflight} 7`, 600_000);
  const out = r.output.toString().trim();
  if (r.status !== 0) throw new Error(`blkbench in the ${vm.role} VM failed (${r.status}): ${out}`);
  const j = JSON.parse(out.split("\n").pop()!) as Result;
  return { mbps: j.mbps, iops: j.iops };
}

const images = await buildImages((m) => log(`images: ${m}`));
const dir = tmp("disk");
const image = join(dir, "disk.img");
ensureImage(image, 512 * 2 ** 20);
log(`image ${image}; ${mib} MiB per sequential run, ${rounds} rounds after a warm-up`);

const hv = new Hypervisor({ runDir: tmp("run"), diskImage: image });
await hv.up();
const app = hv.vm("app");
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

const rows: Array<{ workload: string; viaDiskVm: Result; direct: Result; ratioMbps: number; ratioIops: number }> = [];
const statusBefore = (await hv.status()).disk;
for (const w of WORKLOADS) {
  log(w.name);
  await run(app, "/dev/vda", w); // warm-up: v86 compiles the code paths first
  await run(baseline, "/dev/sda", w);
  const remote: Result[] = [];
  const direct: Result[] = [];
  for (let i = 0; i < rounds; i++) {
    remote.push(await run(app, "/dev/vda", w));
    direct.push(await run(baseline, "/dev/sda", w));
  }
  const r = { mbps: median(remote.map((x) => x.mbps)), iops: median(remote.map((x) => x.iops)) };
  const d = { mbps: median(direct.map((x) => x.mbps)), iops: median(direct.map((x) => x.iops)) };
  rows.push({ workload: w.name, viaDiskVm: r, direct: d, ratioMbps: r.mbps / d.mbps, ratioIops: r.iops / d.iops });
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
      `Bulkhead disk benchmark, ${report.date}: medians of ${rounds} after a warm-up, ${mib} MiB sequential, ${mib / 4} MiB random`,
      "",
      "workload             via disk VM MB/s  IOPS   direct MB/s  IOPS   ratio",
      ...rows.map(
        (r) =>
          `${r.workload.padEnd(20)} ${f(r.viaDiskVm.mbps).padStart(16)} ${f(r.viaDiskVm.iops, 0).padStart(6)}  ${f(r.direct.mbps).padStart(11)} ${f(r.direct.iops, 0).padStart(6)}  ${f(r.ratioMbps, 2).padStart(5)}`,
      ),
      "",
      `mean host round trip of a request (front end -> disk VM -> front end): ${f(report.latency.frontEndRoundTripMs, 3)} ms`,
      `  of which in the disk VM (ring -> blkback -> ata_piix -> image file -> reply): ${f(report.latency.backEndServiceMs, 3)} ms`,
    ].join("\n") + "\n",
  );
}
