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

  /**
   * Pings twice a period and declares the VM hung when nothing has answered
   * for two whole periods: a hang is seen 2 to 2.5 periods after the last
   * answer, however the pings fall.
   */
  private heartbeat(vm: VirtualMachine, periodMs: number): void {
    let lastAnswer = performance.now();
    let outstanding = 0;
    const timer = setInterval(() => {
      if (this.stopped) return;
      const now = performance.now();
      if (vm.state !== "ready" || !vm.running) {
        lastAnswer = now;
        return;
      }
      if (now - lastAnswer > 2 * periodMs) {
        vm.declareDead("hang", `no heartbeat for ${Math.round(now - lastAnswer)} ms (two periods of ${periodMs} ms)`);
        lastAnswer = now;
        return;
      }
      if (outstanding >= 4) return;
      outstanding++;
      vm.ping(4 * periodMs)
        .then(() => (lastAnswer = Math.max(lastAnswer, performance.now())))
        .catch(() => {})
        .finally(() => outstanding--);
    }, periodMs / 2);
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
