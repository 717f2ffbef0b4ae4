// The priority of a VM's worker thread. The driver paths are pipelines of two
// workers (the app VM's and a driver VM's) that hand each request to each
// other every ~100 us; a third runnable thread anywhere on the machine takes
// turns with them in slices of milliseconds, and whenever one of the two is
// off its core the other waits. Measured on 2 cores with one busy-looping
// process beside the disk bench: the path fell to a fifth of its speed while
// the directly attached baseline VM kept its own; with the workers at nice
// -10 it fell to half (docs/benchmarks.md). Linux keeps a nice value per
// thread, so each worker sets its own.
import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";

/** Nice value of VM workers unless told otherwise: a vCPU thread comes before batch work. */
export const DEFAULT_WORKER_NICE = -10;

export interface PriorityResult {
  /** The thread's nice value now (NaN where it cannot be read). */
  nice: number;
  /** Why the asked value was not set (no root or CAP_SYS_NICE, not Linux). */
  refused?: string;
}

/** This thread's id: Linux names it in /proc/thread-self. */
function threadId(): number | undefined {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    return Number.isInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

/** Sets the calling thread's nice value; 0 leaves it as the process has it. */
export function setThreadNice(nice: number): PriorityResult {
  const tid = threadId();
  if (tid === undefined) return { nice: NaN, refused: "no /proc/thread-self (not Linux)" };
  const now = (): number => {
    try {
      return getPriority(tid);
    } catch {
      return NaN;
    }
  };
  if (nice === 0) return { nice: now() };
  try {
    setPriority(tid, nice);
    return { nice: now() };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    return { nice: now(), refused: `${code}${code === "EACCES" || code === "EPERM" ? " (a negative nice value needs root or CAP_SYS_NICE)" : ""}` };
  }
}
