// How long a front end went without service across a back end's restart:
// from the moment its link went away (the monitor detected the fault) to
// the first request or frame served by the successor.

export class RecoveryClock {
  private since: number | undefined;
  recoveries = 0;
  lastServedAgainMs: number | null = null;

  /** The back end went away. */
  lost(): void {
    this.since ??= performance.now();
  }

  /** Something was served over the link: if it was lost, it is back. */
  served(): void {
    if (this.since === undefined) return;
    this.lastServedAgainMs = performance.now() - this.since;
    this.since = undefined;
    this.recoveries++;
  }

  snapshot(): { recoveries: number; lastServedAgainMs: number | null } {
    return { recoveries: this.recoveries, lastServedAgainMs: this.lastServedAgainMs };
  }
}
