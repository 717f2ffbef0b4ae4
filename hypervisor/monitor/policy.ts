// Restart policy of the monitor: a budget of restarts in a sliding window
// with exponential back-off between them. Past the budget the VM is failed.

export interface RestartPolicyOptions {
  maxRestarts: number;
  windowMs: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicyOptions = { maxRestarts: 5, windowMs: 60_000, baseBackoffMs: 0, maxBackoffMs: 5_000 };

export type RestartDecision = { action: "restart"; delayMs: number } | { action: "give-up"; reason: string };

export class RestartPolicy {
  private readonly history = new Map<string, number[]>();

  constructor(readonly options: RestartPolicyOptions = DEFAULT_RESTART_POLICY) {}

  decide(vm: string, now = Date.now()): RestartDecision {
    const recent = (this.history.get(vm) ?? []).filter((t) => now - t < this.options.windowMs);
    if (recent.length >= this.options.maxRestarts) {
      this.history.set(vm, recent);
      return { action: "give-up", reason: `${recent.length} restarts within ${this.options.windowMs / 1000} s` };
    }
    recent.push(now);
    this.history.set(vm, recent);
    const n = recent.length - 1;
    const delayMs = n === 0 ? this.options.baseBackoffMs : Math.min(this.options.maxBackoffMs, Math.max(this.options.baseBackoffMs, 100) * 2 ** (n - 1));
    return { action: "restart", delayMs };
  }

  /** Forgets a VM's history (after an operator restarts it by hand). */
  reset(vm: string): void {
    this.history.delete(vm);
  }
}
