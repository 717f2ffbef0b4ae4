// Network benchmark: the same transfers, side by side in one run, in the
// app VM through the net VM (virtio-net -> channel -> netback -> bridge ->
// ne2k-pci -> wire) and in a single baseline VM whose NE2000 is plugged
// straight into a wire of its own (same program, same settings). A
// benchmark, not a test: it reports, it asserts nothing.
//
//   node dist/bench/net.js [--rounds N] [--mib M] [--requests R] [--warmup SECONDS] [--json]
//
// Both sides first download the file in turn for --warmup seconds each
// (bench/warm-up.ts says why). Each round: one download (the figure the
// ratio is about), two downloads at once (two show what the path can carry),
// small requests, pings; each measured on both sides back to back, which
// side goes first alternating by round.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASELINE_VM } from "../guests/baseline.js";
import { Wire, WIRE_NET } from "../drivervm/net/wire.js";
import { Hypervisor } from "../hypervisor/hypervisor.js";
import { SnapshotStore } from "../hypervisor/vm/snapshot.js";
import { VirtualMachine } from "../hypervisor/vm/vm.js";
import { buildImages } from "../images/build.js";
import { cacheDir } from "../images/paths.js";
import { benchOptions } from "./options.js";
import { warmUp } from "./warm-up.js";
import { measureWork } from "./work.js";
import { median, medianBy, pairedRatio } from "./median.js";

const args = benchOptions(
  "net",
  [
    "Downloads (one, then two at once), small HTTP requests and pings, side by side in one run: in the app VM through the",
    "net VM, and in a baseline VM whose NE2000 is on a wire of its own. Prints medians and ratios.",
  ],
  {
    rounds: { default: 3, min: 1, value: "N", help: "measured rounds per side" },
    mib: { default: 24, min: 1, value: "M", help: "size of the downloaded file in MiB" },
    requests: { default: 50, min: 1, value: "R", help: "small HTTP requests per round" },
    warmup: { default: 30, min: 0, value: "SECONDS", help: "download in turn on both sides for this long first" },
  },
);
const { rounds, mib, requests } = args;
const warmupSeconds = args.warmup;
const log = (m: string) => process.stderr.write(`[bench] ${m}\n`);
const dir = mkdtempSync(join(tmpdir(), "bulkhead-bench-net-"));

const file = randomBytes(mib * 2 ** 20);
const fileSha = createHash("sha256").update(file).digest("hex");
const server: Server = createServer((req, res) => (req.url === "/file" ? res.end(file) : res.end("ok\n")));
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const base = `http://${WIRE_NET.gateway}:${(server.address() as AddressInfo).port}`;

async function sh(vm: VirtualMachine, cmd: string, timeoutMs = 600_000): Promise<string> {
  const r = await vm.exec(cmd, timeoutMs);
  if (r.status !== 0) throw new Error(`${vm.role}: \`${cmd}\` exited ${r.status}: ${r.output.toString()}`);
  return r.output.toString();
}

async function waitForLease(vm: VirtualMachine): Promise<void> {
  for (let i = 0; i < 60; i++) {
    if ((await sh(vm, "ip route")).includes(`default via ${WIRE_NET.gateway}`)) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${vm.role} VM got no DHCP lease`);
}

/** Seconds of guest time a command takes (from /proc/uptime, 10 ms resolution). */
async function guestSeconds(vm: VirtualMachine, cmd: string): Promise<number> {
  const out = await sh(vm, `a=$(cut -d' ' -f1 /proc/uptime); ${cmd}; b=$(cut -d' ' -f1 /proc/uptime); echo "$a $b"`);
  const [a, b] = out.trim().split("\n").pop()!.split(" ").map(Number);
  return b - a;
}

interface Result {
  mbps: number;
  /** Two downloads of the file at once: MB/s together. One download is bound by its round trip; two show the path's capacity. */
  twoMbps: number;
  requestMs: number;
  pingMs: number;
  /**
   * During the download, per MB: each VM's guest instructions (millions),
   * its worker's CPU milliseconds and event-loop busy milliseconds (CPU plus
   * time waiting for a core); the downloading VM first.
   */
  perMB: Array<{ role: string; minstructions: number; cpuMs: number; busyMs: number }>;
  /** The whole process's CPU milliseconds per MB during the download (every thread, VMs' workers included). */
  processMsPerMB: number;
}

/** One download in vms[0], counting the work of every VM in `vms` during it. */
async function download(vms: VirtualMachine[]): Promise<Pick<Result, "mbps" | "perMB" | "processMsPerMB">> {
  const { result: s, work } = await measureWork(vms, () => guestSeconds(vms[0], `wget -q -O /dev/null ${base}/file`));
  const mb = file.length / 1e6;
  const perMB = work.vms.map((w) => ({ role: w.role, minstructions: w.instructions / 1e6 / mb, cpuMs: w.cpuMs / mb, busyMs: w.busyMs / mb }));
  return { mbps: mb / s, perMB, processMsPerMB: work.processMs / mb };
}

async function twoDownloads(vm: VirtualMachine): Promise<number> {
  const two = await guestSeconds(vm, `wget -q -O /dev/null ${base}/file & wget -q -O /dev/null ${base}/file; wait`);
  return (2 * file.length) / 1e6 / two;
}

async function smallRequestMs(vm: VirtualMachine): Promise<number> {
  const r = await guestSeconds(vm, `i=0; while [ $i -lt ${requests} ]; do wget -q -O /dev/null ${base}/small; i=$((i+1)); done`);
  return (r * 1000) / requests;
}

async function pingMs(vm: VirtualMachine): Promise<number> {
  const ping = /= [\d.]+\/([\d.]+)\//.exec(await sh(vm, `ping -c 10 -i 0.2 ${WIRE_NET.gateway} | tail -1`));
  return ping ? Number(ping[1]) : NaN;
}

/**
 * One round: each figure measured on both sides back to back, the side that
 * goes first alternating from round to round, so that the machine's slow and
 * fast phases (the shared host moves by up to 2x within minutes) fall on
 * both sides of a pair alike.
 */
async function round(i: number, sides: { via: VirtualMachine[]; direct: VirtualMachine[] }): Promise<{ via: Result; direct: Result }> {
  const order: Array<"via" | "direct"> = i % 2 === 0 ? ["via", "direct"] : ["direct", "via"];
  const out: Record<"via" | "direct", Partial<Result>> = { via: {}, direct: {} };
  for (const side of order) Object.assign(out[side], await download(sides[side]));
  for (const side of order) out[side].twoMbps = await twoDownloads(sides[side][0]);
  for (const side of order) out[side].requestMs = await smallRequestMs(sides[side][0]);
  for (const side of order) out[side].pingMs = await pingMs(sides[side][0]);
  return { via: out.via as Result, direct: out.direct as Result };
}

const images = await buildImages((m) => log(`images: ${m}`));
const hv = new Hypervisor({ runDir: join(dir, "run"), roles: ["app", "net"] });
await hv.up();
const app = hv.vm("app");
const baselineWire = new Wire({ binary: images.hostTools.slirpWire, socketPath: join(dir, "baseline-wire.sock"), logPath: join(dir, "baseline-wire.log") });
await baselineWire.start();
const baseline = new VirtualMachine({
  config: BASELINE_VM,
  images,
  snapshots: new SnapshotStore(join(cacheDir(), "snapshots")),
  logDir: join(dir, "logs"),
  devices: [{ kind: "wire", socketPath: baselineWire.socketPath }],
  snapshotShape: [{ kind: "wire" }],
  spare: false,
});
await baseline.start();
await Promise.all([waitForLease(app), waitForLease(baseline)]);

log(`checking a ${mib} MiB download in both VMs`);
for (const vm of [app, baseline]) {
  const sum = (await sh(vm, `wget -q -O - ${base}/file | sha256sum`)).split(" ")[0];
  if (sum !== fileSha) throw new Error(`${vm.role}: download checksum ${sum} != ${fileSha}`);
}
await warmUp(
  warmupSeconds,
  { via: () => sh(app, `wget -q -O /dev/null ${base}/file`), direct: () => sh(baseline, `wget -q -O /dev/null ${base}/file`) },
  (spent) => log(`warm-up: ${spent.via.toFixed(0)} s via the net VM, ${spent.direct.toFixed(0)} s direct (of ${warmupSeconds} s each)`),
);
const viaNetVm: Result[] = [];
const direct: Result[] = [];
for (let i = 0; i < rounds; i++) {
  log(`round ${i + 1} of ${rounds}`);
  const r = await round(i, { via: [app, hv.vm("net")], direct: [baseline] });
  viaNetVm.push(r.via);
  direct.push(r.direct);
}
const net = (await hv.status()).net;
const baselineNic = (await baseline.deviceStatus()).wire as Record<string, unknown> | null;
await baseline.shutdown();
await baselineWire.stop();
await hv.down();
server.close();

/** Medians of each figure; the per-MB work is the median download's. */
const pick = (rs: Result[]) => {
  const medianDownload = medianBy(rs, (r) => r.mbps);
  return {
    mbps: median(rs.map((r) => r.mbps)),
    twoMbps: median(rs.map((r) => r.twoMbps)),
    requestMs: median(rs.map((r) => r.requestMs)),
    pingMs: median(rs.map((r) => r.pingMs)),
    perMB: medianDownload.perMB,
    processMsPerMB: medianDownload.processMsPerMB,
    /** The median download's own rate, which its per-MB work goes with. */
    medianDownloadMbps: medianDownload.mbps,
  };
};
const v = pick(viaNetVm);
const d = pick(direct);
/** The median of each round's own ratio: each pair was measured back to back. */
const paired = (f: (r: Result) => number) => pairedRatio(viaNetVm, direct, f);
// What bounds one download: how much of it each VM spent on a CPU, and what the path's busiest VM could carry if it never waited.
const onCpu = (w: { cpuMs: number }, mbps: number) => (w.cpuMs * mbps) / 1000;
const busiest = v.perMB.reduce((a, b) => (b.cpuMs > a.cpuMs ? b : a));
const busiestCeiling = 1000 / busiest.cpuMs;
const coalesced = (net?.frontEnd?.coalesced ?? null) as { frames: number; segments: number } | null;
const report = {
  date: new Date().toISOString(),
  rounds,
  mib,
  requests,
  warmupSeconds,
  viaNetVm: v,
  direct: d,
  ratio: v.mbps / d.mbps,
  pairedRatios: { download: paired((r) => r.mbps), twoDownloads: paired((r) => r.twoMbps), requestMs: paired((r) => r.requestMs), pingMs: paired((r) => r.pingMs) },
  busiestVm: { role: busiest.role, ceilingMbps: busiestCeiling, ratioToDirect: busiestCeiling / d.mbps },
  rawRounds: { viaNetVm, direct },
  net,
  baselineNic,
};
if (args.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
else {
  const f = (x: number, n = 1) => x.toFixed(n);
  process.stdout.write(
    [
      `Bulkhead network benchmark, ${report.date}: medians of ${rounds} rounds after a ${warmupSeconds} s warm-up per side, ${mib} MiB download, ${requests} small HTTP requests, 10 pings`,
      "",
      "                          via net VM    direct   ratio   paired",
      `download MB/s             ${f(v.mbps, 2).padStart(10)} ${f(d.mbps, 2).padStart(9)}   ${f(report.ratio, 2)}    ${f(report.pairedRatios.download, 2)}`,
      `two downloads MB/s        ${f(v.twoMbps, 2).padStart(10)} ${f(d.twoMbps, 2).padStart(9)}   ${f(v.twoMbps / d.twoMbps, 2)}    ${f(report.pairedRatios.twoDownloads, 2)}`,
      `small request ms         ${f(v.requestMs, 1).padStart(11)} ${f(d.requestMs, 1).padStart(9)}   ${f(v.requestMs / d.requestMs, 2)}    ${f(report.pairedRatios.requestMs, 2)}`,
      `ping to the gateway ms   ${f(v.pingMs, 2).padStart(11)} ${f(d.pingMs, 2).padStart(9)}   ${f(v.pingMs / d.pingMs, 2)}    ${f(report.pairedRatios.pingMs, 2)}`,
      "ratio: of the medians; paired: the median of each round's ratio (the two sides measured back to back).",
      `one download, each round via / direct: ${viaNetVm.map((r, i) => `${f(r.mbps, 1)}/${f(direct[i].mbps, 1)}`).join(", ")}`,
      "",
      "work per MB downloaded (median download): guest instructions / worker CPU time / worker busy time",
      ...[...v.perMB.map((w) => ({ ...w, role: `${w.role} VM` })), { ...d.perMB[0], role: "baseline VM (direct)" }].map(
        (w) => `  ${w.role.padEnd(22)} ${f(w.minstructions, 1).padStart(6)} M / ${f(w.cpuMs, 0).padStart(4)} ms / ${f(w.busyMs, 0).padStart(4)} ms`,
      ),
      `  whole process, via net VM ${f(v.processMsPerMB, 0)} ms, direct ${f(d.processMsPerMB, 0)} ms (all threads: the VMs' workers, V8's compiler and`,
      "  garbage-collector threads, the main thread; the wire's slirp helper is a process of its own)",
      `  on a CPU during the median download: ${v.perMB.map((w) => `${w.role} VM ${f(100 * onCpu(w, v.medianDownloadMbps), 0)}%`).join(", ")}; baseline VM ${f(100 * onCpu(d.perMB[0], d.medianDownloadMbps), 0)}%`,
      `  the path's busiest VM (${busiest.role}) on a CPU all the time would carry ${f(busiestCeiling, 2)} MB/s, ${f(busiestCeiling / d.mbps, 2)} of direct`,
      ...(coalesced
        ? [`  merged into the app VM over the run: ${coalesced.segments} TCP segments in ${coalesced.frames} packets (${f(coalesced.segments / Math.max(1, coalesced.frames), 1)} per packet)`]
        : []),
      "",
      `drops on the path: front end ${JSON.stringify(net?.frontEnd?.drops ?? {})}, back end ${JSON.stringify(net?.backEnd?.drops ?? {})}, NIC ${JSON.stringify(net?.nic?.drops ?? {})}`,
      `interrupt nudges (lost NE2000 receive interrupts): net VM ${String(net?.nic?.nudges ?? "?")}, baseline ${String(baselineNic?.nudges ?? "?")}`,
    ].join("\n") + "\n",
  );
}
