// The monitor (the reincarnation server): faults in, policy decides,
// restarts out. Detectors live in the VM (worker exit or error, panic on
// the console); what to do about a fault is the policy's call.
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
  ) {}

  watch(vm: VirtualMachine): void {
    vm.on("fault", (fault: VmFault) => void this.handle(vm, fault));
    vm.on("protocol-error", (err: { reason: string }) => this.events.add(vm.role, "protocol-error", err.reason));
  }

  stop(): void {
    this.stopped = true;
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
      this.events.add(vm.role, "failed", decision.reason);
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
