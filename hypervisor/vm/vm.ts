// A VM as the hypervisor's main thread sees it: a worker thread running one
// v86 instance, its console (to a log file and to listeners), its control
// channel, and its life cycle: start (restore the role's pristine snapshot,
// or cold boot and take it), kill, reboot, shut down.
import { EventEmitter } from "node:events";
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import type { ImageSet } from "../../images/build.js";
import { parseControlLine, type ControlMessage, type PciFunction } from "./control-message.js";
import { compileV86Wasm } from "../v86/adapter.js";
import type { Service } from "../kernel/capability.js";
import type { DeviceSpec, FromWorker, ToWorker, WorkerData, WorkerSpec } from "./messages.js";
import type { SnapshotRef, SnapshotStore } from "./snapshot.js";
import type { MachineConfig } from "./spec.js";
import { DEFAULT_WORKER_NICE, raiseSessionGroup } from "./priority.js";

export type VmState = "stopped" | "booting" | "restoring" | "snapshotting" | "ready" | "halted" | "failed";

export type VmFaultKind = "worker-error" | "worker-exit" | "panic" | "oops" | "protocol" | "hang" | "reset" | "violation";
export interface VmFault {
  kind: VmFaultKind;
  detail: string;
}

export class VmError extends Error {
  override readonly name = "VmError";
  constructor(
    readonly role: string,
    readonly code: "start-timeout" | "start-failed" | "down" | "timeout" | "refused",
    message: string,
    readonly consoleTail?: string,
  ) {
    super(
      consoleTail === undefined
        ? message
        : `${message}\n--- last console lines of the ${role} VM ---\n${consoleTail.trim() || "(the console printed nothing)"}`,
    );
  }
}

export interface VmOptions {
  config: MachineConfig;
  images: ImageSet;
  /** Where pristine snapshots live; undefined: always cold boot. */
  snapshots?: SnapshotStore;
  logDir: string;
  coldTimeoutMs?: number;
  restoreTimeoutMs?: number;
  clampIdle?: boolean;
  /** Heap limit of the worker (V8 old generation); past it the worker dies of OOM. */
  heapLimitMiB?: number;
  /** Host-side device models in the VM's worker (front ends, back ends). */
  devices?: DeviceSpec[];
  /** What else shapes the machine and so the snapshot (e.g. the disk's size). */
  snapshotShape?: unknown;
  /** Keep a spare worker with the snapshot loaded, so a reboot is fast (default on). */
  spare?: boolean;
  /** A kernel oops is a fault (a driver VM's driver is dead); off for the app VM, whose kernel carries on. */
  fatalOops?: boolean;
  /** Nice value of the VM's worker thread (default DEFAULT_WORKER_NICE; 0: the process's own). */
  workerNice?: number;
}

export interface ExecResult {
  status: number;
  output: Buffer;
}

interface Pending<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const WORKER_URL = new URL("./worker.js", import.meta.url);

let wasmModule: Promise<WebAssembly.Module> | undefined;
/** v86's wasm, compiled once per process and shared by every worker. */
function sharedWasm(): Promise<WebAssembly.Module> {
  wasmModule ??= compileV86Wasm();
  return wasmModule;
}

interface WorkerHandle {
  worker: Worker;
  /** The VM generation it serves; -1 until activated. */
  generation: number;
  /** Resolves when a restoring worker has built its machine and read its snapshot. */
  prepared: Promise<void>;
}

function withTimeout<T>(p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(error()), ms);
    p.then((v) => (clearTimeout(t), resolve(v)), (e: unknown) => (clearTimeout(t), reject(e)));
  });
}
const READY_MARK = "BULKHEAD-READY";
const TAIL_BYTES = 4096;

/**
 * Workers on their way out, across every VM. Node 20 can crash the process
 * when a worker ends while another starts (nodejs/node#56312; our fault
 * campaigns hit it twice in 1,600 faults, right after a worker exited), so
 * a new worker waits until those have gone.
 */
const exiting = new Set<Promise<void>>();

function leaving(worker: Worker): void {
  const gone = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  exiting.add(gone);
  void gone.then(() => exiting.delete(gone));
}

async function quiesce(): Promise<void> {
  while (exiting.size > 0) await Promise.all([...exiting]);
}

/**
 * Ends a worker: it exits by itself (a "die" message), and only if it does
 * not within a second is it terminated from outside. Node 20 can crash the
 * whole process when a worker is terminated while another starts
 * (nodejs/node#56312); a campaign of 1,000 faults hit that once in 663.
 */
function retire(worker: Worker): void {
  leaving(worker);
  const timer = setTimeout(() => void worker.terminate(), 1000);
  worker.once("exit", () => clearTimeout(timer));
  try {
    worker.postMessage({ type: "die" } satisfies ToWorker);
  } catch {
    clearTimeout(timer);
    void worker.terminate();
  }
}

export class VirtualMachine extends EventEmitter {
  readonly role: string;
  state: VmState = "stopped";
  bootKind: "cold" | "restore" | undefined;
  /** Milliseconds from spawning the worker to the guest answering. */
  bootMs: number | undefined;
  readyAt: number | undefined;
  snapshotMs: number | undefined;
  memory = { heapBytes: 0, externalBytes: 0 };
  readonly consoleLog: string;

  private worker: Worker | undefined;
  private generation = 0;
  private consoleTailText = "";
  private consoleLine = "";
  private seq = 0;
  private pings = new Map<number, Pending<number> & { sent: number }>();
  private execs = new Map<number, Pending<ExecResult> & { output: Buffer[] }>();
  private inventory: (Pending<PciFunction[]> & { fns: PciFunction[] }) | undefined;
  private clockWaiter: Pending<void> | undefined;
  private spare: { handle: WorkerHandle; ref: SnapshotRef } | undefined;
  /** The nice value the latest worker runs at (NaN until one has started). */
  workerNice = NaN;
  private niceNoted = false;
  /** The worker's devices said they can serve (a driver VM's helper registered its window). */
  deviceReady = false;
  private disposed = false;
  private lastCpu: { worker: Worker; at: number; cpuMs: number } | undefined;

  constructor(private readonly opts: VmOptions) {
    super();
    this.role = opts.config.role;
    mkdirSync(opts.logDir, { recursive: true });
    this.consoleLog = join(opts.logDir, `${this.role}.console.log`);
    writeFileSync(this.consoleLog, "");
  }

  /** Starts the VM: restore of its pristine snapshot, else a cold boot that takes one. */
  async start(): Promise<void> {
    this.disposed = false;
    const { snapshots, config, images } = this.opts;
    const key = snapshots?.keyFor(config, images.key, this.opts.snapshotShape ?? null);
    const ref = snapshots && key ? snapshots.find(this.role, key) : undefined;
    if (ref && key && snapshots) {
      try {
        await this.boot(ref);
        this.prepareSpare(ref);
        return;
      } catch (err) {
        if (!(err instanceof VmError && err.code === "start-failed" && /corrupt-state/.test(err.message))) throw err;
        this.note(`snapshot rejected (${err.message.split("\n")[0]}); discarding it and booting cold`);
        this.discardSpare();
        snapshots.discard(this.role, key);
      }
    }
    await this.boot(undefined, snapshots && key ? "snapshotting" : "ready");
    if (snapshots && key) {
      const saved = await this.saveState(snapshots.prepare(this.role, key));
      snapshots.record(this.role, key, saved.sha256, saved.bytes, snapshots.baseFor(images.key));
      this.snapshotMs = saved.ms;
      this.setState("ready");
      this.prepareSpare({ path: snapshots.pathFor(this.role, key), sha256: saved.sha256 });
    }
  }

  private workerSpec(ref: SnapshotRef | undefined): WorkerSpec {
    const { config, images } = this.opts;
    return {
      role: this.role,
      memoryBytes: config.memoryMiB * 2 ** 20,
      nic: config.nic,
      removePciSlots: config.removePciSlots,
      clampIdle: this.opts.clampIdle ?? true,
      bios: images.bios,
      vgaBios: images.vgaBios,
      bzimage: images.bzimage,
      initrd: images.initrd[this.role as keyof ImageSet["initrd"]],
      cmdline: config.cmdline,
      devices: this.opts.devices ?? [],
      state: ref,
      nice: this.opts.workerNice ?? DEFAULT_WORKER_NICE,
    };
  }

  /** `then`: the state once the guest is up ("snapshotting" when a snapshot follows: peers wait for "ready"). */
  private async boot(ref: SnapshotRef | undefined, then: "ready" | "snapshotting" = "ready"): Promise<void> {
    const restoring = ref !== undefined;
    const timeoutMs = restoring ? (this.opts.restoreTimeoutMs ?? 10_000) : (this.opts.coldTimeoutMs ?? 60_000);
    this.kill();
    const t0 = performance.now();
    this.setState(restoring ? "restoring" : "booting");
    this.bootKind = restoring ? "restore" : "cold";
    this.bootMs = undefined;
    this.consoleLine = "";
    let handle: WorkerHandle;
    if (ref) {
      handle = this.takeSpare(ref) ?? (await quiesce(), this.spawnWorker(this.workerSpec(ref), await sharedWasm()));
      try {
        await withTimeout(handle.prepared, timeoutMs, () => new Error(`not prepared within ${timeoutMs} ms`));
      } catch (err) {
        retire(handle.worker);
        this.setState("failed");
        throw new VmError(this.role, "start-failed", `${this.role} VM could not start: ${(err as Error).message}`, this.consoleTail());
      }
    } else {
      await quiesce();
      handle = this.spawnWorker(this.workerSpec(undefined), await sharedWasm());
    }
    this.activate(handle);
    if (restoring) handle.worker.postMessage({ type: "resume" } satisfies ToWorker);
    await this.waitReady(restoring, timeoutMs);
    this.bootMs = performance.now() - t0;
    this.readyAt = Date.now();
    this.setState(then);
  }

  /** Ready: a cold guest announces it (console mark and helper hello); a restored one answers a ping. */
  private waitReady(restoring: boolean, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let sawReadyMark = false;
      let sawHello = false;
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.off("console-line", onLine);
        this.off("control", onControl);
        this.off("fault", onFault);
        this.off("worker-message", onWorker);
        if (!err) return resolve();
        this.kill();
        this.setState("failed");
        reject(err);
      };
      const timer = setTimeout(
        () => finish(new VmError(this.role, "start-timeout", `${this.role} VM did not become ready within ${timeoutMs} ms`, this.consoleTail())),
        timeoutMs,
      );
      const onLine = (line: string) => {
        if (!restoring && line.startsWith(`${READY_MARK} ${this.role}`)) {
          sawReadyMark = true;
          if (sawHello) finish();
        }
      };
      const onControl = (msg: ControlMessage) => {
        if (!restoring && msg.kind === "hello" && msg.role === this.role) {
          sawHello = true;
          if (sawReadyMark) finish();
        }
      };
      const onFault = (fault: VmFault) =>
        finish(new VmError(this.role, "start-failed", `${this.role} VM failed while starting: ${fault.kind}: ${fault.detail}`, this.consoleTail()));
      const onWorker = (msg: FromWorker) => {
        if (msg.type === "start-failed") {
          finish(new VmError(this.role, "start-failed", `${this.role} VM could not start (${msg.kind}): ${msg.message}`, this.consoleTail()));
        } else if (msg.type === "loaded" && restoring) {
          this.ping(timeoutMs)
            .then(() => this.setClock())
            .then(() => finish(), (err: Error) => finish(err));
        }
      };
      this.on("console-line", onLine);
      this.on("control", onControl);
      this.on("fault", onFault);
      this.on("worker-message", onWorker);
    });
  }

  /** Spawns a worker; it does nothing for this VM until activated. */
  private spawnWorker(spec: WorkerSpec, wasm: WebAssembly.Module): WorkerHandle {
    const group = raiseSessionGroup(spec.nice);
    if (group?.refused && !this.niceNoted) {
      this.niceNoted = true;
      this.note(`session group priority: nice ${spec.nice} refused (${group.refused}); it stays at ${group.nice}`);
    }
    const worker = new Worker(WORKER_URL, { workerData: { spec, wasm } satisfies WorkerData, resourceLimits: { maxOldGenerationSizeMb: this.opts.heapLimitMiB ?? 256 } });
    let prepare!: { resolve: () => void; reject: (e: Error) => void };
    const prepared = new Promise<void>((resolve, reject) => (prepare = { resolve, reject }));
    prepared.catch(() => {});
    const handle: WorkerHandle = { worker, generation: -1, prepared };
    const current = () => handle.generation === this.generation;
    worker.on("message", (msg: FromWorker) => {
      if (msg.type === "priority") {
        this.workerNice = msg.nice;
        if (msg.refused && !this.niceNoted) {
          this.niceNoted = true;
          this.note(`worker priority: nice ${spec.nice} refused (${msg.refused}); running at nice ${msg.nice}`);
        }
      }
      if (msg.type === "prepared") prepare.resolve();
      if (msg.type === "start-failed") prepare.reject(new Error(`${msg.kind}: ${msg.message}`));
      if (!current()) return;
      switch (msg.type) {
        case "console":
          this.onConsole(Buffer.from(msg.data));
          break;
        case "channel":
          this.onChannel(msg.line);
          break;
        case "memory":
          this.memory = { heapBytes: msg.heapBytes, externalBytes: msg.externalBytes };
          break;
        case "violation":
          this.note(`protocol violation${msg.peer ? ` by the other end of the ${msg.peer} channel` : ""}: ${msg.detail}`);
          this.emit("violation", msg.detail, msg.peer);
          break;
        case "cpu-reset":
          // A reset during a reboot of our own making is that reboot; otherwise the guest is gone.
          if (this.state === "ready") this.declareDead("reset", "the CPU reset (triple fault or reboot)");
          break;
        case "device-ready":
          this.deviceReady = true;
          this.emit("device-ready");
          break;
        default:
          this.emit("worker-message", msg);
      }
    });
    worker.on("error", (err) => {
      prepare.reject(err);
      if (current()) this.fault({ kind: "worker-error", detail: `${(err as NodeJS.ErrnoException).code ?? "error"}: ${err.message}` });
    });
    worker.on("exit", (code) => {
      prepare.reject(new Error(`worker exited with code ${code}`));
      if (!current()) return;
      this.worker = undefined;
      if (this.state !== "stopped" && this.state !== "halted") this.fault({ kind: "worker-exit", detail: `worker exited with code ${code}` });
    });
    return handle;
  }

  private activate(handle: WorkerHandle): void {
    this.deviceReady = false;
    handle.generation = ++this.generation;
    this.worker = handle.worker;
    this.lastCpu = undefined;
  }

  /** Builds the next restore's worker ahead of need, so a reboot is a restore and nothing more. */
  private prepareSpare(ref: SnapshotRef): void {
    if (this.opts.spare === false) return;
    this.discardSpare();
    void sharedWasm().then(async (wasm) => {
      await quiesce();
      if (this.spare || this.disposed) return;
      this.spare = { handle: this.spawnWorker(this.workerSpec(ref), wasm), ref };
    });
  }

  private takeSpare(ref: SnapshotRef): WorkerHandle | undefined {
    const s = this.spare;
    this.spare = undefined;
    if (s && s.ref.path === ref.path && s.ref.sha256 === ref.sha256) return s.handle;
    if (s) retire(s.handle.worker);
    return undefined;
  }

  private discardSpare(): void {
    if (this.spare) retire(this.spare.handle.worker);
    this.spare = undefined;
  }

  /**
   * A detector outside the VM (the monitor's heartbeat) declares it dead:
   * its worker is stopped at once, as for any other fault.
   */
  declareDead(kind: "hang" | "reset" | "violation", detail: string): void {
    if (!this.worker) return;
    const worker = this.worker;
    this.worker = undefined;
    this.generation++;
    retire(worker);
    this.fault({ kind, detail });
  }

  private fault(fault: VmFault): void {
    this.note(`fault: ${fault.kind}: ${fault.detail}`);
    this.failPending(new VmError(this.role, "down", `${this.role} VM is down (${fault.kind})`));
    if (fault.kind !== "protocol") this.setState("failed");
    this.emit("fault", fault);
  }

  private failPending(err: Error): void {
    for (const p of this.pings.values()) (clearTimeout(p.timer), p.reject(err));
    for (const p of this.execs.values()) (clearTimeout(p.timer), p.reject(err));
    this.pings.clear();
    this.execs.clear();
    if (this.inventory) (clearTimeout(this.inventory.timer), this.inventory.reject(err));
    this.inventory = undefined;
    if (this.clockWaiter) (clearTimeout(this.clockWaiter.timer), this.clockWaiter.reject(err));
    this.clockWaiter = undefined;
  }

  private onConsole(data: Buffer): void {
    appendFileSync(this.consoleLog, data);
    this.consoleTailText = (this.consoleTailText + data.toString("latin1")).slice(-TAIL_BYTES);
    this.emit("console", data);
    const text = this.consoleLine + data.toString("latin1");
    const lines = text.split("\n");
    this.consoleLine = (lines.pop() ?? "").slice(-TAIL_BYTES);
    for (const raw of lines) {
      const line = raw.replace(/\r$/, "");
      this.emit("console-line", line);
      if (/reboot: (Power down|System halted)/.test(line)) this.onHalted();
      else if (/Kernel panic - not syncing/.test(line)) this.fault({ kind: "panic", detail: line.slice(0, 200) });
      // An oops leaves the kernel running with a dead driver: as good as a panic for a driver VM.
      else if (this.opts.fatalOops && /^\[[\s\d.]+\] (Oops|BUG: |general protection fault|invalid opcode: |kernel BUG at )/.test(line)) {
        this.fault({ kind: "oops", detail: line.slice(0, 200) });
      }
    }
  }

  private onHalted(): void {
    this.setState("halted");
    this.failPending(new VmError(this.role, "down", `${this.role} VM powered off`));
    this.emit("halted");
  }

  private onChannel(line: string): void {
    const msg = parseControlLine(line);
    if (msg.kind === "invalid") {
      this.note(`refused control message: ${msg.reason}: ${JSON.stringify(msg.line.slice(0, 80))}`);
      this.emit("protocol-error", msg);
      return;
    }
    this.emit("control", msg);
    switch (msg.kind) {
      case "pong": {
        const p = this.pings.get(msg.seq);
        if (p) (this.pings.delete(msg.seq), clearTimeout(p.timer), p.resolve(performance.now() - p.sent));
        break;
      }
      case "clock-ok":
        if (this.clockWaiter) (clearTimeout(this.clockWaiter.timer), this.clockWaiter.resolve());
        this.clockWaiter = undefined;
        break;
      case "out":
        this.execs.get(msg.id)?.output.push(msg.data);
        break;
      case "exit": {
        const p = this.execs.get(msg.id);
        if (p) (this.execs.delete(msg.id), clearTimeout(p.timer), p.resolve({ status: msg.status, output: Buffer.concat(p.output) }));
        break;
      }
      case "exit-refused": {
        const p = this.execs.get(msg.id);
        if (p) (this.execs.delete(msg.id), clearTimeout(p.timer), p.reject(new VmError(this.role, "refused", `command refused by the ${this.role} VM: ${msg.reason}`)));
        break;
      }
      case "pci":
        if (this.inventory && this.inventory.fns.length < 256) this.inventory.fns.push(msg.fn);
        break;
      case "inventory-end":
        if (this.inventory) (clearTimeout(this.inventory.timer), this.inventory.resolve(this.inventory.fns));
        this.inventory = undefined;
        break;
      case "error":
        this.note(`helper error: ${msg.what} ${msg.detail}`);
        if (msg.what === "inventory" && this.inventory) {
          clearTimeout(this.inventory.timer);
          this.inventory.reject(new VmError(this.role, "refused", `inventory failed in the ${this.role} VM: ${msg.detail}`));
          this.inventory = undefined;
        }
        break;
      default:
        break;
    }
  }

  private send(msg: ToWorker): void {
    if (!this.worker) throw new VmError(this.role, "down", `${this.role} VM is not running`);
    this.worker.postMessage(msg);
  }

  private channelSend(line: string): void {
    this.send({ type: "channel-send", line });
  }

  /** Sends a request line whose answer `p` awaits; if the VM is down, `p` never dangles. */
  private ask<T>(p: Promise<T>, line: string, unregister: () => void): Promise<T> {
    try {
      this.channelSend(line);
    } catch (err) {
      unregister();
      p.catch(() => {});
      return Promise.reject(err);
    }
    return p;
  }

  private pending<T>(timeoutMs: number, what: string, register: (p: Pending<T>) => void, unregister: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        unregister();
        reject(new VmError(this.role, "timeout", `${what} got no answer from the ${this.role} VM within ${timeoutMs} ms`));
      }, timeoutMs);
      register({ resolve, reject, timer });
    });
  }

  /** Heartbeat: resolves with the round trip in milliseconds. */
  ping(timeoutMs = 2000): Promise<number> {
    const seq = ++this.seq;
    const sent = performance.now();
    const p = this.pending<number>(timeoutMs, "ping", (p) => this.pings.set(seq, { ...p, sent }), () => this.pings.delete(seq));
    return this.ask(p, `BH1 ping ${seq}`, () => (clearTimeout(this.pings.get(seq)?.timer), this.pings.delete(seq)));
  }

  /** Runs `sh -c command` in the guest through its helper. */
  exec(command: string, timeoutMs = 60_000): Promise<ExecResult> {
    const id = ++this.seq;
    const p = this.pending<ExecResult>(timeoutMs, `command ${JSON.stringify(command.slice(0, 60))}`, (p) => this.execs.set(id, { ...p, output: [] }), () => this.execs.delete(id));
    return this.ask(p, `BH1 exec ${id} ${Buffer.from(command).toString("base64")}`, () => (clearTimeout(this.execs.get(id)?.timer), this.execs.delete(id)));
  }

  /** The PCI functions the guest's Linux PCI driver enumerated (pciback). */
  pciInventory(timeoutMs = 5000): Promise<PciFunction[]> {
    if (this.inventory) return Promise.reject(new VmError(this.role, "refused", "an inventory request is already running"));
    const p = this.pending<PciFunction[]>(timeoutMs, "inventory", (p) => (this.inventory = { ...p, fns: [] }), () => (this.inventory = undefined));
    return this.ask(p, "BH1 inventory", () => (clearTimeout(this.inventory?.timer), (this.inventory = undefined)));
  }

  /** Fault injection: the helper stops itself (SIGSTOP), every thread; nothing answers. */
  hangHelper(): void {
    this.channelSend("BH1 hang");
  }

  /** Fault injection: the helper presses a magic SysRq key (c: panic, b: immediate reboot). */
  sysrq(key: "c" | "b"): void {
    this.channelSend(`BH1 sysrq ${key}`);
  }

  /** Fault injection: flips `bits` random bits of the given kernel code ranges in the guest's memory. */
  flip(ranges: Array<{ start: number; end: number }>, bits: number, seed: number, timeoutMs = 2000): Promise<Array<{ virtual: number; physical: number; bit: number }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => (this.off("worker-message", on), reject(new VmError(this.role, "timeout", "flip got no answer from the worker"))), timeoutMs);
      const on = (msg: FromWorker) => {
        if (msg.type !== "flipped") return;
        clearTimeout(timer);
        this.off("worker-message", on);
        if (msg.error) reject(new VmError(this.role, "refused", `flip failed: ${msg.error}`));
        else resolve(msg.flips);
      };
      this.on("worker-message", on);
      try {
        this.send({ type: "flip", ranges, bits, seed });
      } catch (err) {
        clearTimeout(timer);
        this.off("worker-message", on);
        reject(err);
      }
    });
  }

  /**
   * Fault injection: the driver VM's helper writes `count` malformed entries
   * into its shared ring, as a compromised driver VM would.
   */
  garbage(count: number, timeoutMs = 5000): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const done = () => (clearTimeout(timer), this.off("control", on), this.off("fault", onFault));
      const timer = setTimeout(() => (done(), reject(new VmError(this.role, "timeout", `garbage got no answer from the ${this.role} VM`))), timeoutMs);
      const on = (msg: ControlMessage) => {
        if (msg.kind === "garbage-sent") (done(), resolve(msg.count));
      };
      // The host may declare the VM dead before the helper can answer.
      const onFault = (fault: VmFault) => (done(), reject(new VmError(this.role, "down", `${this.role} VM is down (${fault.kind}) before it answered`)));
      this.on("control", on);
      this.on("fault", onFault);
      try {
        this.channelSend(`BH1 garbage ${count}`);
      } catch (err) {
        done();
        reject(err);
      }
    });
  }

  /** After a restore the guest clock is at snapshot time: set it to now. */
  private setClock(timeoutMs = 2000): Promise<void> {
    const now = Date.now();
    const p = this.pending<void>(timeoutMs, "clock", (p) => (this.clockWaiter = p), () => (this.clockWaiter = undefined));
    // "resume" also drops the guest's block caches, which may predate the disk's contents.
    return this.ask(p, `BH1 resume ${Math.floor(now / 1000)} ${(now % 1000) * 1000}`, () => (clearTimeout(this.clockWaiter?.timer), (this.clockWaiter = undefined)));
  }

  private saveState(path: string): Promise<{ bytes: number; sha256: string; ms: number }> {
    return new Promise((resolve, reject) => {
      const onMsg = (msg: FromWorker) => {
        if (msg.type === "state-saved") (this.off("worker-message", onMsg), resolve(msg));
        else if (msg.type === "state-failed") (this.off("worker-message", onMsg), reject(new VmError(this.role, "start-failed", `snapshot failed: ${msg.message}`)));
      };
      this.on("worker-message", onMsg);
      this.send({ type: "save-state", path });
    });
  }

  /** Hands the VM's devices a channel to a peer task (the kernel made it). */
  attachChannel(service: Service, channel: unknown): void {
    this.send({ type: "attach-channel", service, channel });
  }

  detachChannel(service: Service): void {
    if (this.worker) this.send({ type: "detach-channel", service });
  }

  /** The peer is given up: the devices fail their requests with an error instead of waiting. */
  failChannel(service: Service, reason: string): void {
    if (this.worker) this.send({ type: "fail-channel", service, reason });
  }

  /** Counters of the VM's host-side devices. */
  deviceStatus(timeoutMs = 1000): Promise<Record<string, unknown>> {
    return this.askWorker({ type: "device-status" }, (msg) => (msg.type === "device-status" ? msg.devices : undefined), "device status", timeoutMs);
  }

  /**
   * How much work this VM's current worker has done, both counted from 0 at
   * its start (again when the VM is restored into a new worker):
   * `instructions`, the guest instructions executed, is a measure of guest
   * work that host noise does not move; `busyMs` is the time the worker's
   * event loop was busy (v86 and our devices), the rest it slept; `cpuMs`
   * is the worker thread's time on a CPU (NaN where Linux's schedstat is
   * missing), which leaves out the time it was busy but waiting for a core;
   * `spinMs` is the part of it spent looking for work rather than doing it
   * (the worker polling its channels while the guest halts, a helper's
   * looks at an empty ring).
   */
  cpuStatus(timeoutMs = 1000): Promise<{ instructions: number; busyMs: number; cpuMs: number; spinMs: number }> {
    return this.askWorker(
      { type: "cpu-status" },
      (msg) => (msg.type === "cpu-status" ? { instructions: msg.instructions, busyMs: msg.busyMs, cpuMs: msg.cpuMs, spinMs: msg.spinMs } : undefined),
      "cpu status",
      timeoutMs,
    );
  }

  /** Sends a question to the worker and resolves with the first reply `pick` accepts. */
  private askWorker<T>(question: ToWorker, pick: (msg: FromWorker) => T | undefined, what: string, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => (this.off("worker-message", on), reject(new VmError(this.role, "timeout", `${what} timed out`))), timeoutMs);
      const on = (msg: FromWorker) => {
        const answer = pick(msg);
        if (answer === undefined) return;
        clearTimeout(timer);
        this.off("worker-message", on);
        resolve(answer);
      };
      this.on("worker-message", on);
      this.send(question);
    });
  }

  writeConsole(data: Uint8Array): void {
    this.send({ type: "console-input", data });
  }

  /** Fault injection: the VM's worker dies abruptly (the monitor sees a worker exit). */
  killWorker(): void {
    this.send({ type: "die" });
    if (this.worker) leaving(this.worker);
  }

  /** Resets the guest's CPU, as a triple fault would. */
  resetCpu(): void {
    this.send({ type: "reset-cpu" });
  }

  /**
   * Host CPU used by this VM's worker thread since the last call (0..1 of a
   * core), from the thread's own schedstat; 0 on the first call for a worker.
   * (The event-loop utilisation read from this thread came out negative, or
   * many times the real CPU, for an idle worker.)
   */
  async cpuLoad(): Promise<number> {
    const worker = this.worker;
    if (!worker) return 0;
    const { cpuMs } = await this.cpuStatus();
    const at = performance.now();
    const last = this.lastCpu;
    this.lastCpu = { worker, at, cpuMs };
    if (!last || last.worker !== worker || !Number.isFinite(cpuMs) || at <= last.at) return 0;
    return Math.max(0, (cpuMs - last.cpuMs) / (at - last.at));
  }

  /** Hard reset: the worker dies at once, nothing of it survives. */
  kill(): void {
    const worker = this.worker;
    this.worker = undefined;
    this.generation++;
    this.failPending(new VmError(this.role, "down", `${this.role} VM was stopped`));
    if (worker) retire(worker);
    if (this.state !== "failed" && this.state !== "halted") this.setState("stopped");
  }

  async reboot(): Promise<void> {
    this.kill();
    await this.start();
  }

  /** Stops the emulator cleanly, falling back to a hard kill. */
  async shutdown(timeoutMs = 3000): Promise<void> {
    this.disposed = true;
    this.discardSpare();
    const worker = this.worker;
    if (!worker) return this.kill();
    this.generation++;
    this.failPending(new VmError(this.role, "down", `${this.role} VM is shutting down`));
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    worker.postMessage({ type: "stop" } satisfies ToWorker);
    const timer = setTimeout(() => void worker.terminate(), timeoutMs);
    await exited;
    clearTimeout(timer);
    this.worker = undefined;
    this.setState("stopped");
  }

  get running(): boolean {
    return this.worker !== undefined;
  }

  consoleTail(lines = 15): string {
    return this.consoleTailText.split("\n").slice(-lines).join("\n");
  }

  private setState(state: VmState): void {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", state);
  }

  private note(text: string): void {
    appendFileSync(this.consoleLog, `\n[bulkhead] ${new Date().toISOString()} ${text}\n`);
    this.emit("note", text);
  }
}
