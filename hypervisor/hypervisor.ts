// The hypervisor: the microkernel's objects (tasks, capabilities), the
// device manager and the monitor, and the four VMs of a Bulkhead setup.
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { buildImages, type ImageSet } from "../images/build.js";
import { cacheDir, runDir } from "../images/paths.js";
import { APP_VM } from "../guests/app.js";
import { DRIVER_VMS } from "../drivervm/roles.js";
import { DeviceManager } from "./devices/manager.js";
import { EventLog } from "./events.js";
import { CapabilitySpace, describe } from "./kernel/capability.js";
import { TaskTable, type Task } from "./kernel/task.js";
import { Monitor } from "./monitor/monitor.js";
import { RestartPolicy, type RestartPolicyOptions, DEFAULT_RESTART_POLICY } from "./monitor/policy.js";
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
}

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
  consoleLog: string;
}

export interface StatusReport {
  pid: number;
  upSinceS: number;
  rssMiB: number;
  vms: VmStatus[];
  devices: Array<{ name: string; description: string; owner: string; bdf: string | null; irq: number | null; bars: string[] }>;
  inventory: DeviceManager["inventory"] | null;
  events: ReturnType<EventLog["list"]>;
}

export class Hypervisor extends EventEmitter {
  readonly tasks = new TaskTable();
  readonly caps = new CapabilitySpace();
  readonly devices = new DeviceManager(this.caps);
  readonly events: EventLog;
  readonly monitor: Monitor;
  readonly runDir: string;
  images: ImageSet | undefined;
  private readonly startedAt = Date.now();
  private cpu = new Map<string, number>();
  private sampler: NodeJS.Timeout | undefined;

  constructor(private readonly opts: HypervisorOptions = {}) {
    super();
    this.runDir = opts.runDir ?? runDir();
    this.events = new EventLog(join(this.runDir, "events.jsonl"));
    this.monitor = new Monitor(this.events, new RestartPolicy(opts.restartPolicy ?? DEFAULT_RESTART_POLICY), (vm) => {
      if (vm.role === "pci") void this.refreshInventory();
    });
  }

  get roles(): readonly SetupRole[] {
    return this.opts.roles ?? ROLES;
  }

  /** Builds images if needed, then starts every VM; resolves when all are ready. */
  async up(): Promise<void> {
    const t0 = performance.now();
    this.images = await buildImages((message) => this.emit("progress", { kind: "images", message } satisfies ProgressEvent));
    const snapshots = this.opts.snapshots === false ? undefined : new SnapshotStore(join(cacheDir(), "snapshots"));
    for (const role of this.roles) {
      const task = this.tasks.create(role);
      this.devices.grantFor(task.id, role);
      const config = this.devices.machineFor(task.id, ROLE_CONFIG[role]);
      const vm = new VirtualMachine({ config, images: this.images, snapshots, logDir: join(this.runDir, "logs"), clampIdle: this.opts.clampIdle });
      task.vm = vm;
      vm.on("state", (state: VmState) => {
        this.emit("progress", { kind: "vm", role, state, ms: performance.now() - t0 } satisfies ProgressEvent);
        this.events.add(role, state);
      });
      this.monitor.watch(vm);
    }
    const results = await Promise.allSettled(this.tasks.all().map((t) => t.vm!.start()));
    const failed = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
    if (failed.length > 0) {
      await this.down();
      throw failed[0];
    }
    for (const t of this.tasks.all()) this.events.add(t.role, "booted", t.vm!.bootKind, t.vm!.bootMs);
    if (this.roles.includes("pci")) await this.refreshInventory();
    this.sampler = setInterval(() => this.sampleCpu(), 5000);
    this.sampler.unref();
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
    for (const t of this.tasks.all()) if (t.vm) this.cpu.set(t.role, t.vm.cpuLoad());
  }

  status(): StatusReport {
    const now = Date.now();
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
        consoleLog: vm.consoleLog,
      };
    });
    return {
      pid: process.pid,
      upSinceS: Math.round((now - this.startedAt) / 1000),
      rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
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
      events: this.events.list().slice(-50),
    };
  }

  async down(): Promise<void> {
    this.monitor.stop();
    if (this.sampler) clearInterval(this.sampler);
    await Promise.all(this.tasks.all().map((t) => t.vm?.shutdown()));
    this.emit("down");
  }
}
