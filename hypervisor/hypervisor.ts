// The hypervisor: the microkernel's objects (tasks, capabilities), the
// device manager and the monitor, and the four VMs of a Bulkhead setup.
import { EventEmitter } from "node:events";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildImages, type ImageSet } from "../images/build.js";
import type { DriverText } from "../images/driver-text.js";
import { cacheDir, runDir } from "../images/paths.js";
import { APP_VM } from "../guests/app.js";
import { sessionGroupNice } from "./vm/priority.js";
import { DRIVER_VMS } from "../drivervm/roles.js";
import { DeviceManager } from "./devices/manager.js";
import { EventLog } from "./events.js";
import { CapabilitySpace, describe, SERVICES, type Service } from "./kernel/capability.js";
import { TaskTable, type Task } from "./kernel/task.js";
import { Monitor } from "./monitor/monitor.js";
import { RestartPolicy, type RestartPolicyOptions, DEFAULT_RESTART_POLICY } from "./monitor/policy.js";
import { ChannelTable } from "./kernel/channel.js";
import type { DeviceSpec } from "./vm/messages.js";
import type { InjectedFault } from "./control/protocol.js";
import { processAlive } from "./process-alive.js";
import { ensureImage } from "../drivervm/disk/image-file.js";
import { Wire, WIRE_NET } from "../drivervm/net/wire.js";
import { APP_MAC, VIRTIO_NET_FEATURES } from "../bridge/virtio-net/device.js";
import type { BlockMetricsSnapshot } from "../bridge/virtio-blk/metrics.js";
import { SnapshotStore } from "./vm/snapshot.js";
import type { RoleConfig } from "./vm/spec.js";
import { VirtualMachine, VmError, type VmState } from "./vm/vm.js";

export const ROLES = ["app", "disk", "net", "pci"] as const;
export type SetupRole = (typeof ROLES)[number];

const ROLE_CONFIG: Record<SetupRole, RoleConfig> = { app: APP_VM, ...DRIVER_VMS };

export type ProgressEvent =
  | { kind: "images"; message: string }
  | { kind: "vm"; role: string; state: VmState; ms: number };

export interface HypervisorOptions {
  roles?: readonly SetupRole[];
  /** Folder for console logs and the event log. */
  runDir?: string;
  /** false: every start is a cold boot and no snapshot is written. */
  snapshots?: boolean;
  restartPolicy?: RestartPolicyOptions;
  clampIdle?: boolean;
  /** Nice value of the VMs' worker threads (default -10 where permitted; 0: the process's own). */
  workerNice?: number;
  /** The disk image (raw); created on first use. Default: disk.img in the run folder. */
  diskImage?: string;
  /** Size of a disk image created on first use (default 256 MiB). */
  diskSizeBytes?: number;
  /** Heartbeat period of the driver VMs' helpers in ms; two missed periods mean dead (0: off). */
  heartbeatMs?: number;
  /** Host loopback ports the app VM may reach at the gateway (default: all). */
  allowPorts?: "all" | number[];
}

export const DEFAULT_HEARTBEAT_MS = 1000;

export const DEFAULT_DISK_BYTES = 256 * 2 ** 20;

export interface VmStatus {
  role: string;
  task: number;
  state: VmState;
  capabilities: string[];
  boot: "cold" | "restore" | null;
  bootMs: number | null;
  snapshotMs: number | null;
  uptimeS: number | null;
  memoryMiB: number;
  heapMiB: number;
  cpu: number;
  /** The nice value of the VM's worker thread (null before one has started). */
  nice: number | null;
  consoleLog: string;
}

export interface StatusReport {
  pid: number;
  upSinceS: number;
  rssMiB: number;
  /** The nice value of this process's session group (autogroup); null where the kernel has none. */
  sessionNice: number | null;
  vms: VmStatus[];
  devices: Array<{ name: string; description: string; owner: string; bdf: string | null; irq: number | null; bars: string[] }>;
  inventory: DeviceManager["inventory"] | null;
  disk: DiskStatus | null;
  net: NetStatus | null;
  events: ReturnType<EventLog["list"]>;
}

export interface NetStatus {
  wire: { socket: string; running: boolean; restarts: number; gateway: string; allowPorts: string };
  /** The app VM's virtio-net: frames and bytes each way, drops by reason. */
  frontEnd: Record<string, unknown> | null;
  /** The net VM's back end: netback's rings. */
  backEnd: Record<string, unknown> | null;
  /** The net VM's NE2000 on the wire. */
  nic: Record<string, unknown> | null;
}

export interface DiskStatus {
  image: string;
  sizeBytes: number;
  /** The app VM's virtio-blk front end: requests, bytes each way, in flight. */
  frontEnd: BlockMetricsSnapshot | null;
  /** The disk VM's back end: what blkback served through ata_piix. */
  backEnd: Record<string, unknown> | null;
}

export class Hypervisor extends EventEmitter {
  readonly tasks = new TaskTable();
  readonly caps = new CapabilitySpace();
  readonly devices = new DeviceManager(this.caps);
  readonly channels = new ChannelTable(this.caps);
  disk: { path: string; sizeBytes: number } | undefined;
  wire: Wire | undefined;
  readonly events: EventLog;
  readonly monitor: Monitor;
  readonly runDir: string;
  images: ImageSet | undefined;
  private readonly startedAt = Date.now();
  private cpu = new Map<string, number>();
  private sampler: NodeJS.Timeout | undefined;
  private lockPath: string | undefined;

  constructor(private readonly opts: HypervisorOptions = {}) {
    super();
    this.runDir = opts.runDir ?? runDir();
    this.events = new EventLog(join(this.runDir, "events.jsonl"));
    this.monitor = new Monitor(
      this.events,
      new RestartPolicy(opts.restartPolicy ?? DEFAULT_RESTART_POLICY),
      (vm) => {
        if (vm.role === "pci") void this.refreshInventory();
      },
      (vm) => this.disconnectServicesOf(vm.role),
      (vm, reason) => {
        // Past the restart budget: its clients get errors, not a hang, until `bulkhead restart`.
        const task = this.tasks.byRole(vm.role);
        for (const service of SERVICES) {
          if (!task || !this.caps.holds(task.id, { kind: "service", service, side: "server" })) continue;
          for (const t of this.tasks.all()) if (t !== task && t.vm?.running) t.vm.failChannel(service, `${vm.role} VM failed: ${reason}`);
        }
      },
    );
  }

  get roles(): readonly SetupRole[] {
    return this.opts.roles ?? ROLES;
  }

  /**
   * One setup per run folder: two would drive the same disk image from two
   * disk VMs. The lock names its owner's pid; a dead owner's lock is taken over.
   */
  private lock(): void {
    mkdirSync(this.runDir, { recursive: true });
    const path = join(this.runDir, "setup.lock");
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(path, `${process.pid}\n`, { flag: "wx" });
        this.lockPath = path;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const owner = Number(readFileSync(path, "utf8").trim());
        if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) {
          throw new Error(`another Bulkhead setup (pid ${owner}) is running in ${this.runDir}; stop it with \`bulkhead down\` or use another BULKHEAD_RUN_DIR`);
        }
        rmSync(path, { force: true });
      }
    }
    throw new Error(`cannot take ${path}`);
  }

  /** Builds images if needed, then starts every VM; resolves when all are ready. */
  async up(): Promise<void> {
    const t0 = performance.now();
    this.lock();
    this.images = await buildImages((message) => this.emit("progress", { kind: "images", message } satisfies ProgressEvent));
    const snapshots = this.opts.snapshots === false ? undefined : new SnapshotStore(join(cacheDir(), "snapshots"));
    if (this.roles.includes("disk")) {
      const path = this.opts.diskImage ?? join(this.runDir, "disk.img");
      this.disk = { path, sizeBytes: ensureImage(path, this.opts.diskSizeBytes ?? DEFAULT_DISK_BYTES) };
    }
    if (this.roles.includes("net")) {
      const wire = new Wire({
        binary: this.images.hostTools.slirpWire,
        socketPath: join(this.runDir, "wire.sock"),
        allowPorts: this.opts.allowPorts,
        logPath: join(this.runDir, "wire.log"),
      });
      wire.on("exit", (how: string) => this.events.add("wire", "wire-died", how));
      wire.on("restarted", () => this.events.add("wire", "wire-restarted"));
      wire.on("failed", (err: Error) => this.events.add("wire", "wire-failed", err.message));
      this.wire = wire;
      try {
        await wire.start();
      } catch (err) {
        await this.down();
        throw err;
      }
    }
    for (const role of this.roles) {
      const task = this.tasks.create(role);
      this.devices.grantFor(task.id, role);
      const config = this.devices.machineFor(task.id, ROLE_CONFIG[role]);
      const { devices, shape } = this.hostDevicesFor(task.id);
      const vm = new VirtualMachine({
        config,
        images: this.images,
        snapshots,
        logDir: join(this.runDir, "logs"),
        clampIdle: this.opts.clampIdle,
        workerNice: this.opts.workerNice,
        devices,
        snapshotShape: shape,
        fatalOops: role !== "app",
      });
      task.vm = vm;
      vm.on("state", (state: VmState) => {
        this.emit("progress", { kind: "vm", role, state, ms: performance.now() - t0 } satisfies ProgressEvent);
        this.events.add(role, state);
        // A client may need its server while it boots (the app VM's kernel
        // reads /dev/vda's partition table): connect as soon as both run.
        if (state === "ready" || state === "booting" || state === "restoring") this.connectServicesOf(role, false);
      });
      this.monitor.watch(vm, role === "app" ? 0 : (this.opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS));
      // A driver VM that breaks the protocol is treated as compromised: it is restarted like a crashed one.
      vm.on("violation", (detail: string, peer?: Service) => this.onViolation(role, detail, peer));
    }
    // The first VM that fails to start fails the setup: the others stop too.
    const starts = this.tasks.all().map((t) => t.vm!.start());
    for (const p of starts) p.catch(() => {});
    try {
      await Promise.all(starts);
    } catch (err) {
      await this.down();
      throw err;
    }
    for (const t of this.tasks.all()) this.events.add(t.role, "booted", t.vm!.bootKind, t.vm!.bootMs);
    if (this.roles.includes("pci")) await this.refreshInventory();
    this.sampler = setInterval(() => this.sampleCpu(), 5000);
    this.sampler.unref();
  }

  /** The host-side devices a task's worker runs, from the capabilities it holds. */
  private hostDevicesFor(task: number): { devices: DeviceSpec[]; shape: unknown } {
    const devices: DeviceSpec[] = [];
    if (this.disk && this.caps.holds(task, { kind: "service", service: "block", side: "client" })) {
      devices.push({ kind: "virtio-blk", capacitySectors: this.disk.sizeBytes / 512 });
    }
    if (this.disk && this.caps.holds(task, { kind: "device", device: "ide" })) {
      devices.push({ kind: "physical-disk", imagePath: this.disk.path });
      if (this.caps.holds(task, { kind: "service", service: "block", side: "server" })) devices.push({ kind: "block-backend" });
    }
    if (this.wire && this.caps.holds(task, { kind: "device", device: "ne2k" })) {
      devices.push({ kind: "wire", socketPath: this.wire.socketPath });
      if (this.caps.holds(task, { kind: "service", service: "net", side: "server" })) devices.push({ kind: "net-backend" });
    }
    if (this.caps.holds(task, { kind: "service", service: "net", side: "client" })) devices.push({ kind: "virtio-net", mac: APP_MAC });
    // The snapshot depends on the devices, not on where the image file or the wire's socket is;
    // and on the features a virtio device offers, which its guest driver accepted before the snapshot.
    const shape = devices.map((d) =>
      d.kind === "physical-disk"
        ? { kind: d.kind, sizeBytes: this.disk!.sizeBytes }
        : d.kind === "wire"
          ? { kind: d.kind }
          : d.kind === "virtio-net"
            ? { ...d, features: VIRTIO_NET_FEATURES }
            : d,
    );
    return { devices, shape };
  }

  /**
   * Sets up the channels of the services a task takes part in, once the
   * server is ready and the client runs; `renew` replaces a live channel.
   */
  private connectServicesOf(role: string, renew = true): void {
    const task = this.tasks.byRole(role);
    if (!task) return;
    for (const service of SERVICES) {
      const client = this.tasks.all().find((t) => this.caps.holds(t.id, { kind: "service", service, side: "client" }));
      const server = this.tasks.all().find((t) => this.caps.holds(t.id, { kind: "service", service, side: "server" }));
      if (!client || !server || (task !== client && task !== server)) continue;
      if (server.vm?.state !== "ready" || !client.vm?.running) continue;
      if (!renew && this.channels.isConnected(service)) continue;
      const ends = this.channels.connect(service, client.id, server.id);
      server.vm.attachChannel(service, ends.server);
      client.vm.attachChannel(service, ends.client);
      this.events.add(role, "channel", `${service} channel ${this.channels.generation}: ${client.role} <-> ${server.role}`);
    }
  }

  /**
   * A protocol violation: by a driver VM's own guest (its helper lied in its
   * ring or window), or reported by one end of a service's channel about the
   * other (a malformed or impossible reply). Either way the driver VM is
   * declared dead and the monitor restarts it; the app VM's own mistakes are
   * only counted.
   */
  private onViolation(reporter: string, detail: string, peer: Service | undefined): void {
    const reporterTask = this.tasks.byRole(reporter);
    // A peer violation blames the other end of the service's channel.
    const otherSide = peer && reporterTask && this.caps.holds(reporterTask.id, { kind: "service", service: peer, side: "server" }) ? "client" : "server";
    const culprit = peer ? this.tasks.all().find((t) => this.caps.holds(t.id, { kind: "service", service: peer, side: otherSide })) : reporterTask;
    if (!culprit || culprit.role === "app" || culprit.vm?.state !== "ready") return;
    this.events.add(culprit.role, "violation", `${peer ? `reported by the ${reporter} VM: ` : ""}${detail}`.slice(0, 300));
    culprit.vm.declareDead("violation", detail.slice(0, 200));
  }

  /** A task died: revoke its channels; the peer keeps its pending work for the successor. */
  private disconnectServicesOf(role: string): void {
    const task = this.tasks.byRole(role);
    if (!task) return;
    for (const service of this.channels.servicesOf(task.id)) {
      this.channels.revoke(service);
      for (const t of this.tasks.all()) if (t !== task && t.vm?.running) t.vm.detachChannel(service);
      this.events.add(role, "channel-revoked", service);
    }
  }

  /**
   * Injects a real fault into a driver VM. The monitor is not told: it has to
   * detect the fault like any other.
   * - panic: the guest kernel panics (sysrq c, pressed by its helper).
   * - flip: random bits of the VM's driver code flip in guest memory.
   * - hang: its helper stops itself (SIGSTOP): only the heartbeat notices.
   * - reset: the guest reboots at once (sysrq b): the CPU resets.
   * The helper takes panic, reset and hang as control verbs, so the fault
   * comes within a millisecond of the injection and detection times mean
   * what they say (a shell command took tens to hundreds of ms to run).
   * - kill: its worker dies abruptly.
   * - garbage: its helper writes lying entries into its shared ring.
   * Returns what was done, for the log.
   */
  async injectFault(role: string, fault: InjectedFault, opts: { seed?: number; bits?: number } = {}): Promise<string> {
    if (role === "app") throw new Error("faults are injected into driver VMs (disk, net, pci), not the app VM");
    const vm = this.vm(role);
    if (vm.state !== "ready") throw new Error(`the ${role} VM is ${vm.state}, not ready`);
    if ((fault === "flip" || fault === "garbage") && role === "pci") throw new Error(`${fault} needs a VM with a device driver and a shared ring: disk or net`);
    let what: string = fault;
    switch (fault) {
      case "kill":
        this.events.add(role, "fault-injected", fault);
        vm.killWorker();
        break;
      case "panic":
      case "reset":
        this.events.add(role, "fault-injected", fault);
        vm.sysrq(fault === "panic" ? "c" : "b");
        break;
      case "hang":
        this.events.add(role, "fault-injected", fault);
        vm.hangHelper();
        break;
      case "garbage": {
        this.events.add(role, "fault-injected", fault);
        const sent = await vm.garbage(role === "disk" ? 8 : 32).catch((err: Error) => `no answer (${err.message})`);
        what = `garbage: ${sent} lying ring entries`;
        break;
      }
      case "flip": {
        const ranges = this.driverText()[role];
        if (!ranges?.length) throw new Error(`no driver code map for the ${role} VM`);
        const bits = opts.bits ?? 32;
        const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
        this.events.add(role, "fault-injected", `flip ${bits} bits (seed ${seed})`);
        const flips = await vm.flip(ranges, bits, seed);
        what = `flip: ${flips.length} bits in ${ranges.map((r) => r.object.split("/").pop()).join(", ")} (seed ${seed})`;
        break;
      }
    }
    return what;
  }

  private driverTextCache: DriverText | undefined;
  /** Where the driver VMs' driver code lives in the guest kernel (built with the kernel). */
  private driverText(): DriverText {
    if (!this.images) throw new Error("no images");
    if (!this.driverTextCache) {
      const path = this.images.driverText;
      if (!existsSync(path)) throw new Error(`${path} is missing: rebuild the images (\`bulkhead images\`) to inject flip faults`);
      this.driverTextCache = JSON.parse(readFileSync(path, "utf8")) as DriverText;
    }
    return this.driverTextCache;
  }

  /** Reboots one VM by hand (from its snapshot); its channels are set up anew. */
  async restartVm(role: string): Promise<void> {
    const vm = this.vm(role);
    this.disconnectServicesOf(role);
    this.monitor.policy.reset(role);
    await vm.reboot();
    this.events.add(role, "restarted", "by hand", vm.bootMs);
    if (role === "pci") await this.refreshInventory();
  }

  vm(role: string): VirtualMachine {
    const vm = this.tasks.byRole(role)?.vm;
    if (!vm) throw new VmError(role, "down", `no ${role} VM in this setup`);
    return vm;
  }

  /** Asks the PCI VM's helper for the functions its Linux driver enumerated. */
  async refreshInventory(): Promise<void> {
    try {
      const fns = await this.vm("pci").pciInventory();
      this.devices.recordInventory(fns);
      this.events.add("pci", "inventory", `${fns.length} PCI functions`);
    } catch (err) {
      this.events.add("pci", "inventory-failed", (err as Error).message);
    }
  }

  private sampleCpu(): void {
    for (const t of this.tasks.all()) {
      const role = t.role;
      t.vm?.cpuLoad().then(
        (load) => this.cpu.set(role, load),
        () => {}, // a VM that does not answer keeps its last figure; the monitor deals with it
      );
    }
  }

  async status(): Promise<StatusReport> {
    const now = Date.now();
    const deviceStatus = async (role: string, name: string) => {
      const vm = this.tasks.byRole(role)?.vm;
      if (!vm?.running) return null;
      try {
        return ((await vm.deviceStatus())[name] as Record<string, unknown> | null) ?? null;
      } catch {
        return null;
      }
    };
    const disk: DiskStatus | null = this.disk
      ? {
          image: this.disk.path,
          sizeBytes: this.disk.sizeBytes,
          frontEnd: (await deviceStatus("app", "virtio-blk")) as BlockMetricsSnapshot | null,
          backEnd: await deviceStatus("disk", "disk"),
        }
      : null;
    const net: NetStatus | null = this.wire
      ? {
          wire: {
            socket: this.wire.socketPath,
            running: this.wire.running,
            restarts: this.wire.restarts,
            gateway: WIRE_NET.gateway,
            allowPorts: this.opts.allowPorts === undefined || this.opts.allowPorts === "all" ? "all" : this.opts.allowPorts.join(","),
          },
          frontEnd: await deviceStatus("app", "virtio-net"),
          backEnd: await deviceStatus("net", "net"),
          nic: await deviceStatus("net", "wire"),
        }
      : null;
    const vms = this.tasks.all().map((t: Task): VmStatus => {
      const vm = t.vm!;
      const config = ROLE_CONFIG[t.role as SetupRole];
      return {
        role: t.role,
        task: t.id,
        state: vm.state,
        capabilities: this.caps.list(t.id).map(describe),
        boot: vm.bootKind ?? null,
        bootMs: vm.bootMs !== undefined ? Math.round(vm.bootMs) : null,
        snapshotMs: vm.snapshotMs !== undefined ? Math.round(vm.snapshotMs) : null,
        uptimeS: vm.state === "ready" && vm.readyAt ? Math.round((now - vm.readyAt) / 1000) : null,
        memoryMiB: config.memoryMiB,
        heapMiB: Math.round((vm.memory.heapBytes + vm.memory.externalBytes) / 2 ** 20),
        cpu: Math.round((this.cpu.get(t.role) ?? 0) * 1000) / 10,
        nice: Number.isNaN(vm.workerNice) ? null : vm.workerNice,
        consoleLog: vm.consoleLog,
      };
    });
    return {
      pid: process.pid,
      upSinceS: Math.round((now - this.startedAt) / 1000),
      rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
      sessionNice: sessionGroupNice() ?? null,
      vms,
      devices: this.devices.devices().map((d) => ({
        name: d.name,
        description: d.description,
        owner: d.owner,
        bdf: d.found?.bdf ?? null,
        irq: d.found?.irq ?? null,
        bars: d.found?.bars.map((b) => `${b.kind} 0x${b.start.toString(16)}+0x${b.size.toString(16)}`) ?? [],
      })),
      inventory: this.devices.inventory ?? null,
      disk,
      net,
      events: this.events.list().slice(-50),
    };
  }

  async down(): Promise<void> {
    this.monitor.stop();
    if (this.sampler) clearInterval(this.sampler);
    await Promise.all(this.tasks.all().map((t) => t.vm?.shutdown()));
    await this.wire?.stop();
    if (this.lockPath) rmSync(this.lockPath, { force: true });
    this.lockPath = undefined;
    this.emit("down");
  }
}
