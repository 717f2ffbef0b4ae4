// The monitor (the reincarnation server): faults in, policy decides,
// restarts out. Detectors live in the VM (worker exit or error, panic on
// the console) and here (the heartbeat: the helper answers pings; two
// missed periods mean dead, as in MINIX 3); what to do about a fault is the
// policy's call.
import type { EventLog } from "../events.js";
import type { VirtualMachine, VmFault } from "../vm/vm.js";
import { RestartPolicy } from "./policy.js";

export class Monitor {
  private stopped = false;
  private readonly restarting = new Set<string>();

  constructor(
    private readonly events: EventLog,
    readonly policy = new RestartPolicy(),
    private readonly onRestarted: (vm: VirtualMachine) => void = () => {},
    private readonly onFault: (vm: VirtualMachine) => void = () => {},
    private readonly onGiveUp: (vm: VirtualMachine, reason: string) => void = () => {},
  ) {}

  private readonly heartbeats: NodeJS.Timeout[] = [];

  /** `heartbeatMs`: ping period for this VM's helper (0: no heartbeat). */
  watch(vm: VirtualMachine, heartbeatMs = 0): void {
    vm.on("fault", (fault: VmFault) => void this.handle(vm, fault));
    if (heartbeatMs > 0) this.heartbeat(vm, heartbeatMs);
    vm.on("protocol-error", (err: { reason: string }) => this.events.add(vm.role, "protocol-error", err.reason));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.heartbeats) clearInterval(t);
  }

  private heartbeat(vm: VirtualMachine, periodMs: number): void {
    let outstanding = false;
    const timer = setInterval(() => {
      if (this.stopped || outstanding || vm.state !== "ready" || !vm.running) return;
      outstanding = true;
      const started = performance.now();
      vm.ping(2 * periodMs)
        .catch((err: { code?: string }) => {
          // Only silence is a hang; a VM that went down meanwhile has its own fault.
          if (err.code === "timeout" && vm.state === "ready" && vm.running) {
            vm.declareDead("hang", `no heartbeat for ${Math.round(performance.now() - started)} ms (two periods of ${periodMs} ms)`);
          }
        })
        .finally(() => (outstanding = false));
    }, periodMs);
    timer.unref();
    this.heartbeats.push(timer);
  }

  private async handle(vm: VirtualMachine, fault: VmFault): Promise<void> {
    const detectedAt = performance.now();
    this.events.add(vm.role, "fault", `${fault.kind}: ${fault.detail}`);
    // A VM that never came up is its starter's business, not a crash to recover.
    if (this.stopped || this.restarting.has(vm.role) || vm.readyAt === undefined) return;
    this.onFault(vm);
    const decision = this.policy.decide(vm.role);
    if (decision.action === "give-up") {
      vm.kill();
      this.events.add(vm.role, "given-up", decision.reason);
      this.onGiveUp(vm, decision.reason);
      return;
    }
    this.restarting.add(vm.role);
    try {
      if (decision.delayMs > 0) await new Promise((r) => setTimeout(r, decision.delayMs));
      if (this.stopped) return;
      await vm.reboot();
      this.events.add(vm.role, "restarted", `${vm.bootKind} boot`, performance.now() - detectedAt);
      this.onRestarted(vm);
    } catch (err) {
      this.events.add(vm.role, "restart-failed", (err as Error).message.split("\n")[0]);
    } finally {
      this.restarting.delete(vm.role);
    }
  }
}
