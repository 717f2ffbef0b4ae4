// The progress display of `bulkhead up`: on a terminal, one line per VM
// redrawn in place; elsewhere, one line per change.
import type { ProgressEvent } from "../hypervisor.js";

export class ProgressDisplay {
  private readonly rows = new Map<string, string>();
  private drawn = 0;
  private imagesLine = "";
  private readonly t0 = performance.now();

  constructor(private readonly out: NodeJS.WriteStream, private readonly roles: readonly string[]) {}

  private get live(): boolean {
    return this.out.isTTY === true;
  }

  private closed = false;

  /** Stops drawing: from now on the terminal belongs to the VM's console. */
  close(): void {
    this.closed = true;
  }

  update(ev: ProgressEvent): void {
    if (this.closed) return;
    const secs = ((ev.kind === "vm" ? ev.ms : performance.now() - this.t0) / 1000).toFixed(1).padStart(5);
    if (ev.kind === "images") {
      this.imagesLine = `images  ${ev.message}`;
      if (!this.live) this.out.write(`[${secs}s] ${this.imagesLine}\n`);
    } else {
      this.rows.set(ev.role, `${ev.role.padEnd(6)}  ${ev.state.padEnd(12)} ${secs} s`);
      if (!this.live) this.out.write(`[${secs}s] ${ev.role}: ${ev.state}\n`);
    }
    if (this.live) this.redraw();
  }

  private redraw(): void {
    const lines = [this.imagesLine || "images  ready", ...this.roles.map((r) => this.rows.get(r) ?? `${r.padEnd(6)}  waiting`)];
    if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A`);
    for (const l of lines) this.out.write(`\x1b[2K${l}\n`);
    this.drawn = lines.length;
  }
}
