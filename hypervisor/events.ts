// The event log: what happened to which VM, when, and how long it took.
// Kept in memory for `status` and appended as JSON lines to a file.
import { appendFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

export interface HvEvent {
  time: string;
  vm: string;
  kind: string;
  detail?: string;
  ms?: number;
}

export class EventLog {
  private readonly recent: HvEvent[] = [];

  constructor(private readonly file: string | undefined, private readonly keep = 500) {
    if (file) mkdirSync(dirname(file), { recursive: true });
  }

  add(vm: string, kind: string, detail?: string, ms?: number): HvEvent {
    const ev: HvEvent = { time: new Date().toISOString(), vm, kind, ...(detail ? { detail } : {}), ...(ms !== undefined ? { ms: Math.round(ms * 10) / 10 } : {}) };
    this.recent.push(ev);
    if (this.recent.length > this.keep) this.recent.shift();
    if (this.file) appendFileSync(this.file, JSON.stringify(ev) + "\n");
    return ev;
  }

  list(): HvEvent[] {
    return [...this.recent];
  }
}
