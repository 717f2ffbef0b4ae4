#!/usr/bin/env node
// bulkhead: the hypervisor's command line.
import { DEFAULT_RESTART_POLICY } from "./monitor/policy.js";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { buildImages } from "../images/build.js";
import { cacheDir, runDir } from "../images/paths.js";
import { SnapshotStore } from "./vm/snapshot.js";
import { ControlClient, findEndpoint } from "./control/client.js";
import { ControlServer } from "./control/server.js";
import { Hypervisor, ROLES, type ProgressEvent, type StatusReport } from "./hypervisor.js";
import { attachConsole } from "./terminal/attach.js";
import { ProgressDisplay } from "./terminal/progress.js";
import { formatStatus } from "./terminal/status.js";
import { parseSize } from "../drivervm/disk/image-file.js";
import { INJECTED_FAULTS, type InjectedFault } from "./control/protocol.js";
import { formatCampaign, runCampaign } from "./faults/campaign.js";
import type { HvEvent } from "./events.js";
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** "kind: detail (ms)", as `crash` and `events` print an event. */
function describeEvent(e: HvEvent): string {
  return `${e.kind}${e.detail ? `: ${e.detail}` : ""}${e.ms !== undefined ? ` (${e.ms} ms)` : ""}`;
}

function fail(err: unknown, code = 1): never {
  process.stderr.write(`bulkhead: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(code);
}

/** Starts a setup with a progress display on `out`; the first Ctrl-C stops it cleanly, the second at once. */
interface SetupOptions {
  cold: boolean;
  disk?: string;
  diskSize?: string;
  allowPorts?: string;
  heartbeatMs?: number;
  maxRestarts?: number;
  restartWindowS?: number;
  nice?: number;
}

/** `all`, or a comma-separated list of TCP/UDP ports 1-65535. */
function parseAllowPorts(text: string): "all" | number[] {
  if (text === "all") return "all";
  const ports = text.split(",").map((p) => Number(p.trim()));
  if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new Error(`--allow-ports takes \`all\` or a comma-separated list of ports 1-65535, not ${JSON.stringify(text)}`);
  }
  return ports;
}

async function startSetup(out: NodeJS.WriteStream, o: SetupOptions): Promise<{ hv: Hypervisor; stop: (code: number) => Promise<never> }> {
  const existing = findEndpoint(runDir());
  if (existing) fail(`a setup is already running (pid ${existing.pid}); use \`bulkhead status\`, \`bulkhead run\` or \`bulkhead down\``);
  let diskSizeBytes: number | undefined;
  let allowPorts: "all" | number[] | undefined;
  try {
    diskSizeBytes = o.diskSize ? parseSize(o.diskSize) : undefined;
    allowPorts = o.allowPorts ? parseAllowPorts(o.allowPorts) : undefined;
  } catch (err) {
    fail(err, 2);
  }
  if (o.nice !== undefined && !(Number.isInteger(o.nice) && o.nice >= -20 && o.nice <= 19)) fail("--nice takes a whole number from -20 to 19", 2);
  for (const [name, v] of [["--heartbeat-ms", o.heartbeatMs], ["--max-restarts", o.maxRestarts], ["--restart-window", o.restartWindowS]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= (name === "--heartbeat-ms" ? 0 : 1))) fail(`${name} takes a whole number${name === "--heartbeat-ms" ? " (0: off)" : " above 0"}`, 2);
  }
  const restartPolicy =
    o.maxRestarts !== undefined || o.restartWindowS !== undefined
      ? { ...DEFAULT_RESTART_POLICY, maxRestarts: o.maxRestarts ?? DEFAULT_RESTART_POLICY.maxRestarts, windowMs: (o.restartWindowS ?? DEFAULT_RESTART_POLICY.windowMs / 1000) * 1000 }
      : undefined;
  const hv = new Hypervisor({ snapshots: !o.cold, diskImage: o.disk ? resolve(o.disk) : undefined, diskSizeBytes, allowPorts, heartbeatMs: o.heartbeatMs, restartPolicy, workerNice: o.nice });
  const display = new ProgressDisplay(out, ROLES);
  hv.on("progress", (ev: ProgressEvent) => display.update(ev));
  let stopping = false;
  const stop = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      await hv.down().catch(() => {});
    }
    process.exit(code);
  };
  let interrupts = 0;
  const onSignal = () => {
    if (++interrupts > 1) process.exit(130);
    out.write("\nbulkhead: stopping the VMs (Ctrl-C again to quit at once)\n");
    void stop(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  try {
    await hv.up();
  } catch (err) {
    await hv.down().catch(() => {});
    fail(err);
  }
  display.close();
  return { hv, stop };
}

function summary(s: StatusReport): string {
  return s.vms.map((v) => `${v.role} ${v.boot === "restore" ? "restored" : "booted cold"} in ${((v.bootMs ?? 0) / 1000).toFixed(2)} s`).join(", ");
}

async function up(argv: SetupOptions & { attach: boolean | undefined }): Promise<void> {
  const attach = argv.attach ?? (process.stdin.isTTY === true && process.stdout.isTTY === true);
  const t0 = performance.now();
  const { hv, stop } = await startSetup(process.stdout, argv);
  const control = new ControlServer(hv, () => void control.close().then(() => stop(0)));
  const port = await control.listen();
  const down = async () => {
    await control.close();
    await stop(0);
  };
  process.stdout.write(`\nAll VMs ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${summary(await hv.status())}.\n`);
  process.stdout.write(`Control API on 127.0.0.1:${port}; logs in ${hv.runDir}/logs.\n`);
  if (hv.disk) process.stdout.write(`Disk image ${hv.disk.path} (${hv.disk.sizeBytes / 2 ** 20} MiB) is the app VM's /dev/vda, served by the disk VM.\n`);
  hv.vm("app").on("halted", () => {
    process.stdout.write("\nbulkhead: the app VM powered off; shutting down\n");
    void down();
  });
  if (attach) {
    process.stdout.write("Attached to the app VM's console. Ctrl-] detaches and shuts everything down.\n");
    attachConsole(hv.vm("app"), () => {
      process.stdout.write("\nbulkhead: detached; shutting down\n");
      void down();
    });
  } else {
    process.stdout.write("Running without a console. `bulkhead down` (or Ctrl-C) stops it.\n");
  }
}

async function runCommand(argv: SetupOptions & { command: string[]; timeout: number }): Promise<void> {
  const command = argv.command.join(" ");
  if (!command) fail("nothing to run: bulkhead run -- <command>", 2);
  const timeoutMs = argv.timeout * 1000;
  let status: number;
  let output: Buffer;
  if (findEndpoint(runDir())) {
    const client = await ControlClient.connect(runDir());
    try {
      const r = await client.request<{ status: number; output: string }>("exec", { command, timeoutMs });
      status = r.status;
      output = Buffer.from(r.output, "base64");
    } catch (err) {
      fail(err);
    } finally {
      client.close();
    }
  } else {
    const { hv, stop } = await startSetup(process.stderr, argv);
    try {
      const r = await hv.vm("app").exec(command, timeoutMs);
      status = r.status;
      output = r.output;
    } catch (err) {
      process.stderr.write(`bulkhead: ${(err as Error).message}\n`);
      return void (await stop(1));
    }
    process.stdout.write(output);
    return void (await stop(status));
  }
  process.stdout.write(output);
  process.exit(status);
}

async function withClient<T>(f: (c: ControlClient) => Promise<T>): Promise<T> {
  let client: ControlClient;
  try {
    client = await ControlClient.connect(runDir());
  } catch (err) {
    fail(err);
  }
  try {
    return await f(client);
  } catch (err) {
    fail(err);
  } finally {
    client.close();
  }
}

await yargs(hideBin(process.argv))
  .scriptName("bulkhead")
  .usage("$0 <command>\n\nA driver-isolation hypervisor: an application VM and disk, net and PCI driver VMs, each a Linux kernel in v86.")
  .command(
    "up",
    "Start the four VMs (app, disk, net, pci) and attach to the app VM's console",
    (y) =>
      y
        .option("attach", { type: "boolean", describe: "Attach to the app VM's serial console (default: when on a terminal). Ctrl-] detaches and shuts down." })
        .option("cold", { type: "boolean", default: false, describe: "Cold boot every VM; do not use or write snapshots" })
        .option("disk", { type: "string", describe: "Raw disk image for the app VM's /dev/vda (default: disk.img in the run folder, created on first use)" })
        .option("disk-size", { type: "string", describe: "Size of a disk image created on first use, e.g. 256M or 1G (default 256M)" })
        .option("heartbeat-ms", { type: "number", describe: "Heartbeat period of the driver VMs in ms; two silent periods mean hung (default 1000; 0: off)" })
        .option("max-restarts", { type: "number", describe: "Restart budget: restarts of one VM allowed within --restart-window before it is marked failed (default 5)" })
        .option("restart-window", { type: "number", describe: "Restart budget window in seconds (default 60)" })
        .option("nice", {
          type: "number",
          requiresArg: true,
          describe:
            "Nice value of the VMs' worker threads and, where the kernel groups processes by session (autogroup), of this session's group, so that other busy programs stall the driver paths less (default -10, which needs CAP_SYS_NICE, as root has, or a matching RLIMIT_NICE; without it both stay as they are and the VMs' console logs say so; 0: leave both alone)",
        })
        .option("allow-ports", {
          type: "string",
          describe: "Host loopback ports the app VM may reach at the gateway 10.0.2.2: `all` (default) or a list such as 8080,9000; others are refused at once",
        }),
    (argv) =>
      up({
        attach: argv.attach,
        cold: argv.cold,
        disk: argv.disk,
        diskSize: argv["disk-size"],
        allowPorts: argv["allow-ports"],
        heartbeatMs: argv["heartbeat-ms"],
        maxRestarts: argv["max-restarts"],
        restartWindowS: argv["restart-window"],
        nice: argv.nice,
      }),
  )
  .command(
    "run [command..]",
    "Run one shell command in the app VM, print its output, exit with its status (uses a running setup, or starts one)",
    (y) =>
      y
        .positional("command", { type: "string", array: true, default: [], describe: "the command, after --" })
        .option("timeout", { type: "number", default: 600, describe: "seconds to wait for the command" })
        .option("disk", { type: "string", describe: "Disk image, when this starts a setup (see `up`)" })
        .option("disk-size", { type: "string", describe: "Size of a disk image created on first use (see `up`)" })
        .example("$0 run -- uname -m", "prints i686"),
    (argv) =>
      runCommand({
        command: (argv.command as string[]).concat((argv["--"] as string[] | undefined) ?? []),
        timeout: argv.timeout,
        cold: false,
        disk: argv.disk,
        diskSize: argv["disk-size"],
      }),
  )
  .command(
    "status",
    "Show the running setup: VMs, state, boot or restore time, uptime, memory, host CPU, devices and the PCI inventory",
    (y) => y.option("json", { type: "boolean", default: false, describe: "print JSON" }),
    (argv) =>
      withClient(async (c) => {
        const s = await c.request<StatusReport>("status");
        process.stdout.write(argv.json ? JSON.stringify(s, null, 2) + "\n" : formatStatus(s) + "\n");
      }),
  )
  .command(
    "down",
    "Shut the running setup down",
    () => {},
    () =>
      withClient(async (c) => {
        const ep = findEndpoint(runDir());
        await c.request("down");
        for (let i = 0; i < 100 && ep && findEndpoint(runDir()); i++) await new Promise((r) => setTimeout(r, 100));
        process.stdout.write("setup stopped\n");
      }),
  )
  .command(
    "restart <vm>",
    "Reboot one VM of the running setup (from its snapshot)",
    (y) => y.positional("vm", { type: "string", choices: [...ROLES], demandOption: true }),
    (argv) =>
      withClient(async (c) => {
        const r = await c.request<{ state: string }>("reboot", { vm: argv.vm });
        process.stdout.write(`${argv.vm}: ${r.state}\n`);
      }),
  )
  .command(
    "crash <vm>",
    "Inject a real fault into a driver VM of the running setup and show how the monitor detects it and restarts the VM",
    (y) =>
      y
        .positional("vm", { type: "string", choices: ["disk", "net", "pci"], demandOption: true })
        .option("fault", {
          type: "string",
          choices: [...INJECTED_FAULTS],
          default: "panic",
          describe:
            "panic: the guest kernel panics (sysrq c); flip: random bits of its driver's code flip (disk, net); hang: its helper stops (SIGSTOP); " +
            "reset: the guest reboots at once (sysrq b); kill: its worker dies; garbage: its helper writes lying ring entries (disk, net)",
        })
        .option("wait", { type: "number", default: 15, describe: "seconds to wait for detection and restart" }),
    (argv) =>
      withClient(async (c) => {
        const before = (await c.request<HvEvent[]>("events")).length;
        await c.request("crash", { vm: argv.vm, fault: argv.fault });
        const end = Date.now() + argv.wait * 1000;
        let shown = before;
        let injectedAt: number | undefined;
        while (Date.now() < end) {
          const events = await c.request<HvEvent[]>("events");
          for (const e of events.slice(shown).filter((e) => e.vm === argv.vm)) {
            const t = Date.parse(e.time);
            injectedAt ??= e.kind === "fault-injected" ? t : undefined;
            const since = injectedAt !== undefined ? ` +${((t - injectedAt) / 1000).toFixed(2)} s` : "";
            process.stdout.write(`${e.vm}:${since} ${describeEvent(e)}\n`);
            if (["restarted", "given-up", "restart-failed"].includes(e.kind)) return;
          }
          shown = events.length;
          await new Promise((r) => setTimeout(r, 100));
        }
        fail(`no restart of the ${argv.vm} VM within ${argv.wait} s; see \`bulkhead events\``);
      }),
  )
  .command(
    "faults",
    "Run a fault-injection campaign: a verifying workload in the app VM while real faults hit one driver VM at random moments; prints a table per fault kind",
    (y) =>
      y
        .option("vm", { type: "string", choices: ["disk", "net"], demandOption: true, describe: "the driver VM to inject into" })
        .option("count", { type: "number", default: 30, describe: "number of faults" })
        .option("kinds", { type: "string", default: INJECTED_FAULTS.join(","), describe: `comma-separated fault kinds, taken in turn (${INJECTED_FAULTS.join(", ")})` })
        .option("seed", { type: "number", default: 1, describe: "seed of the random moments and flipped bits: a campaign is repeatable" })
        .option("heartbeat-ms", { type: "number", default: 250, describe: "heartbeat period of the driver VM; two missed periods mean hung" })
        .option("json", { type: "boolean", default: false, describe: "print the raw results (every trial) as JSON" })
        .epilog("The campaign starts its own app and driver VM in a temporary run folder, with a restart budget large enough for it; it does not touch a running setup."),
    async (argv) => {
      const kinds = argv.kinds.split(",").map((k) => k.trim());
      const bad = kinds.filter((k) => !(INJECTED_FAULTS as readonly string[]).includes(k));
      if (bad.length > 0 || kinds.length === 0) fail(`unknown fault kind ${bad.join(", ")}: use ${INJECTED_FAULTS.join(", ")}`, 2);
      if (!Number.isInteger(argv.count) || argv.count < 1) fail("--count must be a positive whole number", 2);
      try {
        const result = await runCampaign({
          vm: argv.vm as "disk" | "net",
          count: argv.count,
          kinds: kinds as InjectedFault[],
          seed: argv.seed,
          heartbeatMs: argv["heartbeat-ms"],
          progress: (line) => process.stderr.write(`faults: ${line}\n`),
        });
        process.stdout.write(argv.json ? JSON.stringify(result, null, 2) + "\n" : formatCampaign(result) + "\n");
        process.exit(result.appSurvived && result.bytesLostOrCorrupted === 0 ? 0 : 1);
      } catch (err) {
        fail(err);
      }
    },
  )
  .command(
    "events",
    "Show the event log of the running setup: boots, faults and how they were detected, restarts and their times (also in events.jsonl in the run folder)",
    (y) => y.option("json", { type: "boolean", default: false, describe: "print JSON" }),
    (argv) =>
      withClient(async (c) => {
        const events = await c.request<HvEvent[]>("events");
        if (argv.json) return void process.stdout.write(JSON.stringify(events, null, 2) + "\n");
        for (const e of events) process.stdout.write(`${e.time}  ${e.vm.padEnd(5)} ${describeEvent(e)}\n`);
      }),
  )
  .command(
    "images",
    "Build the guest images now (kernel, helpers, initramfs per role) and print the manifest",
    (y) =>
      y
        .option("json", { type: "boolean", default: false, describe: "print the manifest as JSON" })
        .option("prune", {
          type: "boolean",
          default: false,
          describe: "Also delete the cached snapshots not made from these images and this v86 (older builds, other checkouts: made again on their next cold boot)",
        }),
    async (argv) => {
      try {
        const images = await buildImages((m) => process.stderr.write(`images: ${m}\n`));
        if (argv.prune) {
          const store = new SnapshotStore(join(cacheDir(), "snapshots"));
          const r = store.prune(store.baseFor(images.key));
          const mib = (b: number) => (b / 2 ** 20).toFixed(0);
          process.stderr.write(`images: pruned ${r.removed} snapshots (${mib(r.removedBytes)} MiB) not made from these images; kept ${r.kept} (${mib(r.keptBytes)} MiB)\n`);
        }
        const { readFileSync } = await import("node:fs");
        const manifest = JSON.parse(readFileSync(images.manifest, "utf8")) as { artifacts: Record<string, { path: string; sha256: string; bytes: number }> };
        if (argv.json) process.stdout.write(JSON.stringify(manifest, null, 2) + "\n");
        else
          for (const [name, a] of Object.entries(manifest.artifacts))
            process.stdout.write(`${name.padEnd(18)} ${a.sha256.slice(0, 16)}  ${String(a.bytes).padStart(9)}  ${a.path}\n`);
      } catch (err) {
        fail(err);
      }
    },
  )
  .command(
    "bench <which> [options..]",
    "Run a benchmark: boot (boot, restore, idle CPU), disk (the disk path against a directly attached disk) or net (the network path against a directly attached NIC). Options after the name go to the benchmark; `bulkhead bench disk --help` lists them",
    (y) =>
      y
        .positional("which", { choices: ["boot", "disk", "net"] as const, describe: "which benchmark" })
        .positional("options", { type: "string", array: true, describe: "the benchmark's own options, e.g. --rounds 5" })
        .strict(false)
        .help(false),
    (argv) => {
      // The benchmarks are scripts of their own (bench/*.ts); run one with this Node and pass its options through.
      const script = fileURLToPath(new URL(`../bench/${argv.which}.js`, import.meta.url));
      const args = hideBin(process.argv);
      const passed = args.slice(args.indexOf("bench") + 2);
      const child = spawn(process.execPath, [script, ...passed], { stdio: "inherit" });
      child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
    },
  )
  .demandCommand(1, "give a command; see --help")
  .parserConfiguration({ "populate--": true })
  .strict()
  .help()
  .parseAsync();
