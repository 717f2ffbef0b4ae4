// A fault-injection campaign: a verifying workload runs in the app VM while
// faults of the chosen kinds are injected for real into one driver VM at
// random moments. Every trial records whether and how the fault was
// detected, whether the VM came back, how long the app VM went unserved,
// and what the app VM saw; the workload's own checks and (for the disk) the
// image file itself say whether any acknowledged byte was lost or corrupted.
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, closeSync, mkdtempSync, openSync, readSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WIRE_NET } from "../../drivervm/net/wire.js";
import type { InjectedFault } from "../control/protocol.js";
import { Hypervisor } from "../hypervisor.js";
import type { VmFault } from "../vm/vm.js";
import { prng } from "./flip.js";

export interface CampaignOptions {
  vm: "disk" | "net";
  count: number;
  kinds: InjectedFault[];
  seed: number;
  /** Heartbeat period of the driver VM (two missed periods mean hung). */
  heartbeatMs?: number;
  /** How long a fault may go undetected before the trial counts it as without effect. */
  quietMs?: number;
  progress?: (line: string) => void;
}

export interface Trial {
  n: number;
  kind: InjectedFault;
  what: string;
  /** The detector that fired (the fault kind the monitor saw), or null. */
  detector: string | null;
  detectMs: number | null;
  recovered: boolean;
  /** Detection to VM ready again (restore). */
  restoreMs: number | null;
  /** Injection to the first request (disk) or frame (net) served by the successor. */
  servedAgainMs: number | null;
  /** I/O errors (disk) or failed downloads (net) the app VM saw during the trial. */
  appErrors: number;
  /** No detection within the quiet period: the VM was restarted by hand for the next trial. */
  noEffect: boolean;
}

export interface KindSummary {
  kind: string;
  injected: number;
  detected: number;
  detectors: Record<string, number>;
  noEffect: number;
  recovered: number;
  appErrors: number;
  detectP50: number | null;
  detectP99: number | null;
  servedAgainP50: number | null;
  servedAgainP99: number | null;
  /** Detection to the first request or frame served again. */
  recoverP50: number | null;
  recoverP99: number | null;
}

export interface CampaignResult {
  vm: string;
  seed: number;
  count: number;
  heartbeatMs: number;
  startedAt: string;
  seconds: number;
  trials: Trial[];
  summary: KindSummary[];
  workload: Record<string, number>;
  /** Acknowledged bytes that were lost or read back corrupted. */
  bytesLostOrCorrupted: number;
  appSurvived: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] * 10) / 10;
}

const BLOCK = 64 * 1024;
const BLOCKS = 1024;
const FILE_BYTES = 2 * 2 ** 20;

export async function runCampaign(o: CampaignOptions): Promise<CampaignResult> {
  const log = o.progress ?? (() => {});
  const heartbeatMs = o.heartbeatMs ?? 250;
  const quietMs = o.quietMs ?? 2500;
  const random = prng(o.seed);
  const dir = mkdtempSync(join(tmpdir(), "bulkhead-faults-"));
  const image = join(dir, "disk.img");
  const hv = new Hypervisor({
    runDir: dir,
    roles: ["app", o.vm],
    heartbeatMs,
    // A campaign restarts the VM hundreds of times a minute on purpose.
    restartPolicy: { maxRestarts: 1_000_000, windowMs: 60_000, baseBackoffMs: 0, maxBackoffMs: 0 },
    diskImage: image,
    diskSizeBytes: 128 * 2 ** 20,
  });
  let server: Server | undefined;
  const started = Date.now();
  log(`starting the app and ${o.vm} VMs in ${dir} (each trial is appended to trials.jsonl there)`);
  await hv.up();
  try {
    const app = hv.vm("app");
    const target = hv.vm(o.vm);
    const frontEndName = o.vm === "disk" ? "virtio-blk" : "virtio-net";
    const frontEnd = async () => ((await app.deviceStatus())[frontEndName] ?? {}) as { recoveries?: number; lastServedAgainMs?: number | null; ioErrors?: number };

    // The workload.
    const workload: Record<string, number> = { downloads: 0, downloadErrors: 0, corruptDownloads: 0 };
    let stopNet = false;
    let netLoop: Promise<void> | undefined;
    let diskRun: Promise<{ status: number; output: Buffer }> | undefined;
    let fileSha = "";
    if (o.vm === "disk") {
      diskRun = app.exec(`faultload /dev/vda ${BLOCKS} ${o.seed}`, 24 * 3600 * 1000);
    } else {
      const file = randomBytes(FILE_BYTES);
      fileSha = createHash("sha256").update(file).digest("hex");
      server = createServer((_req, res) => res.end(file));
      await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
      const url = `http://${WIRE_NET.gateway}:${(server.address() as AddressInfo).port}/file`;
      for (let i = 0; i < 60 && !(await app.exec("ip route", 5000)).output.toString().includes("default via"); i++) await sleep(500);
      // A ping every 50 ms beside the downloads: the first reply after a restart marks the path serving
      // again, whatever TCP's retransmission timers are doing.
      void app.exec(`ping -q -i 0.05 ${WIRE_NET.gateway} > /dev/null`, 24 * 3600 * 1000).catch(() => {});
      netLoop = (async () => {
        while (!stopNet) {
          const r = await app.exec(`if timeout 60 wget -q -O /tmp/d ${url}; then sha256sum /tmp/d; else echo failed; fi`, 120_000).catch(() => undefined);
          const out = r?.output.toString() ?? "failed";
          workload.downloads++;
          if (out.startsWith("failed")) workload.downloadErrors++;
          else if (out.split(" ")[0] !== fileSha) workload.corruptDownloads++;
        }
      })();
    }
    await sleep(1000);

    const trials: Trial[] = [];
    for (let n = 0; n < o.count; n++) {
      const kind = o.kinds[n % o.kinds.length];
      await sleep(200 + random() * 600);
      for (let i = 0; i < 300 && target.state !== "ready"; i++) await sleep(100);
      if (target.state !== "ready") throw new Error(`the ${o.vm} VM did not come back (${target.state}) before trial ${n}`);
      const before = await frontEnd();
      const errorsBefore = o.vm === "disk" ? (before.ioErrors ?? 0) : workload.downloadErrors + workload.corruptDownloads;
      let fault: { kind: string; at: number } | undefined;
      let readyAt: number | undefined;
      const onFault = (f: VmFault) => (fault ??= { kind: f.kind, at: performance.now() });
      const onState = (s: string) => {
        if (fault && s === "ready") readyAt ??= performance.now();
      };
      target.on("fault", onFault);
      target.on("state", onState);
      const t0 = performance.now();
      let what: string = kind;
      try {
        what = await hv.injectFault(o.vm, kind, { seed: Math.floor(random() * 2 ** 31) });
      } catch (err) {
        what = `${kind} (injection: ${(err as Error).message})`;
      }
      const limit = kind === "hang" ? Math.max(quietMs, 4 * heartbeatMs + 1000) : quietMs;
      while (!fault && performance.now() - t0 < limit) await sleep(5);
      let servedAgainMs: number | null = null;
      if (fault) {
        while (!readyAt && performance.now() - t0 < 15_000) await sleep(5);
        // Served again: the front end counts its first success after the link came back.
        for (let i = 0; i < 1000; i++) {
          const fe = await frontEnd().catch(() => undefined);
          if (fe && (fe.recoveries ?? 0) > (before.recoveries ?? 0)) {
            servedAgainMs = fe.lastServedAgainMs != null ? fault.at - t0 + fe.lastServedAgainMs : null;
            break;
          }
          await sleep(10);
        }
      } else {
        // Nothing noticed (a flip in code that did not run, or did no harm): start clean for the next trial.
        await hv.restartVm(o.vm).catch(() => {});
      }
      target.off("fault", onFault);
      target.off("state", onState);
      const after = await frontEnd().catch(() => before);
      const errorsAfter = o.vm === "disk" ? (after.ioErrors ?? 0) : workload.downloadErrors + workload.corruptDownloads;
      const trial: Trial = {
        n,
        kind,
        what,
        detector: fault?.kind ?? null,
        detectMs: fault ? Math.round((fault.at - t0) * 10) / 10 : null,
        recovered: target.state === "ready",
        restoreMs: fault && readyAt ? Math.round((readyAt - fault.at) * 10) / 10 : null,
        servedAgainMs: servedAgainMs !== null ? Math.round(servedAgainMs * 10) / 10 : null,
        appErrors: errorsAfter - errorsBefore,
        noEffect: !fault,
      };
      trials.push(trial);
      // Every trial also goes to disk as it ends: a campaign that dies midway still tells what it saw.
      appendFileSync(join(dir, "trials.jsonl"), JSON.stringify(trial) + "\n");
      log(
        `${String(n + 1).padStart(5)}/${o.count} ${kind.padEnd(7)} ${trial.detector ? `detected by ${trial.detector} in ${trial.detectMs} ms, served again at ${trial.servedAgainMs ?? "?"} ms` : "no effect seen"}${trial.appErrors ? `, ${trial.appErrors} app errors` : ""}`,
      );
    }

    // Stop the workload and check what it wrote.
    let bytesLost = 0;
    if (o.vm === "disk") {
      await app.exec("kill -TERM $(pidof faultload)", 10_000);
      const r = await diskRun!;
      const out = r.output.toString();
      const done = /done writes=(\d+) reads=(\d+) errors=(\d+) corrupt=(\d+)/.exec(out);
      if (!done) throw new Error(`faultload did not finish cleanly: ${out.slice(-500)}`);
      Object.assign(workload, { writes: +done[1], reads: +done[2], errors: +done[3], corruptReads: +done[4] });
      // The image file itself must hold every acknowledged write.
      const fd = openSync(image, "r");
      const buf = Buffer.alloc(16);
      let checked = 0;
      for (const m of out.matchAll(/^block (\d+) (\d+)$/gm)) {
        readSync(fd, buf, 0, 16, Number(m[1]) * BLOCK);
        checked++;
        if (buf.readUInt32LE(0) !== 0x4c464842 || buf.readUInt32LE(4) !== Number(m[1]) || buf.readUInt32LE(8) !== Number(m[2])) bytesLost += BLOCK;
      }
      closeSync(fd);
      workload.blocksCheckedInImage = checked;
      bytesLost += workload.corruptReads * BLOCK;
    } else {
      stopNet = true;
      await netLoop;
      await app.exec("killall ping", 5000).catch(() => {});
      bytesLost = workload.corruptDownloads * FILE_BYTES;
    }

    const summary: KindSummary[] = o.kinds.map((kind) => {
      const ts = trials.filter((t) => t.kind === kind);
      const detected = ts.filter((t) => t.detector);
      const detectors: Record<string, number> = {};
      for (const t of detected) detectors[t.detector!] = (detectors[t.detector!] ?? 0) + 1;
      const served = detected.map((t) => t.servedAgainMs).filter((x): x is number => x !== null);
      const recover = detected.filter((t) => t.servedAgainMs !== null).map((t) => t.servedAgainMs! - t.detectMs!);
      return {
        kind,
        injected: ts.length,
        detected: detected.length,
        detectors,
        noEffect: ts.filter((t) => t.noEffect).length,
        recovered: ts.filter((t) => t.recovered).length,
        appErrors: ts.reduce((n, t) => n + t.appErrors, 0),
        detectP50: percentile(detected.map((t) => t.detectMs!), 50),
        detectP99: percentile(detected.map((t) => t.detectMs!), 99),
        servedAgainP50: percentile(served, 50),
        servedAgainP99: percentile(served, 99),
        recoverP50: percentile(recover, 50),
        recoverP99: percentile(recover, 99),
      };
    });
    const appSurvived = app.state === "ready" && (await app.exec("true", 10_000)).status === 0;
    return {
      vm: o.vm,
      seed: o.seed,
      count: o.count,
      heartbeatMs,
      startedAt: new Date(started).toISOString(),
      seconds: Math.round((Date.now() - started) / 1000),
      trials,
      summary,
      workload,
      bytesLostOrCorrupted: bytesLost,
      appSurvived,
    };
  } finally {
    server?.close();
    await hv.down();
  }
}

export function formatCampaign(r: CampaignResult): string {
  const f = (x: number | null) => (x === null ? "-" : String(x));
  const rows = [
    ["KIND", "INJECTED", "DETECTED", "BY", "NO EFFECT", "RECOVERED", "APP ERRORS", "DETECT P50/P99 MS", "DETECT->SERVED P50/P99", "FAULT->SERVED P50/P99"],
    ...r.summary.map((s) => [
      s.kind,
      String(s.injected),
      String(s.detected),
      Object.entries(s.detectors)
        .map(([k, n]) => `${k} ${n}`)
        .join(", ") || "-",
      String(s.noEffect),
      String(s.recovered),
      String(s.appErrors),
      `${f(s.detectP50)} / ${f(s.detectP99)}`,
      `${f(s.recoverP50)} / ${f(s.recoverP99)}`,
      `${f(s.servedAgainP50)} / ${f(s.servedAgainP99)}`,
    ]),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const table = rows.map((row) => row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
  return [
    `Fault campaign on the ${r.vm} VM: ${r.count} faults, seed ${r.seed}, heartbeat ${r.heartbeatMs} ms, ${r.seconds} s`,
    "",
    table,
    "",
    `workload: ${Object.entries(r.workload)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
    `acknowledged bytes lost or corrupted: ${r.bytesLostOrCorrupted}; app VM survived: ${r.appSurvived ? "yes" : "NO"}`,
  ].join("\n");
}
