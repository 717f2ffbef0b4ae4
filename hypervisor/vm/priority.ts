// The priority of the VMs' worker threads. The driver paths are pipelines of
// two workers (the app VM's and a driver VM's) that hand each request to each
// other every 100-200 us; another busy program takes turns with them in
// slices of milliseconds, and whenever one of the two is off its core the
// other waits. Measured on 2 cores with one busy loop beside the disk path:
// the path fell to a fifth of its speed (docs/benchmarks.md).
//
// Two levels, since Linux weighs threads within a group and groups against
// each other: each worker sets its own thread's nice value (Linux keeps nice
// per thread, so V8's threads and the main thread keep theirs), and where the
// kernel groups processes by session (autogroup) the main thread also sets
// the session's group, without which a busy program in another session is
// not slowed at all by the threads' value.
import { existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { getPriority, setPriority } from "node:os";

/** Nice value of VM workers unless told otherwise: a vCPU thread comes before batch work. */
export const DEFAULT_WORKER_NICE = -10;

export interface PriorityResult {
  /** The nice value now (NaN where it cannot be read). */
  nice: number;
  /** Why the asked value was not set. */
  refused?: string;
}

/** An error's errno name: Node's SystemError keeps it in `info.code`, an ErrnoException in `code`. */
export function errnoName(err: unknown): string {
  const e = err as { info?: { code?: string }; code?: string };
  const code = e.info?.code ?? e.code ?? String(err);
  return code === "EACCES" || code === "EPERM" ? `${code} (a negative nice value needs CAP_SYS_NICE or a matching RLIMIT_NICE)` : code;
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
    return { nice: now(), refused: errnoName(err) };
  }
}

const AUTOGROUP = "/proc/self/autogroup";

/** The nice value of this process's session group, or undefined without autogroup. */
export function sessionGroupNice(): number | undefined {
  try {
    if (readFileSync("/proc/sys/kernel/sched_autogroup_enabled", "utf8").trim() !== "1" || !existsSync(AUTOGROUP)) return undefined;
    const m = / nice (-?\d+)/.exec(readFileSync(AUTOGROUP, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

let sessionGroup: PriorityResult | undefined;
/** The session group's value before we raised it, to give back when the process ends. */
let sessionGroupBefore: number | undefined;

/**
 * Raises this process's session group (autogroup) to `nice` if it is lower
 * priority than that, once per process. Undefined where the kernel does not
 * group by session. This weighs the whole session (a terminal's shell and
 * its other jobs too) against other sessions, as `renice` of the session
 * would; 0 leaves it alone.
 */
export function raiseSessionGroup(nice: number): PriorityResult | undefined {
  if (nice === 0) return undefined;
  if (sessionGroup) return sessionGroup; // once per process: every worker spawn asks
  const current = sessionGroupNice();
  if (current === undefined) return undefined;
  if (current <= nice) return (sessionGroup = { nice: current });
  try {
    writeFileSync(AUTOGROUP, String(nice));
    sessionGroup = { nice: sessionGroupNice() ?? NaN };
    sessionGroupBefore = current;
    process.once("exit", restoreSessionGroup);
  } catch (err) {
    sessionGroup = { nice: current, refused: errnoName(err) };
  }
  return sessionGroup;
}

/**
 * Gives the session group back the value it had before raiseSessionGroup,
 * so a terminal's session is not left raised after the hypervisor ends
 * (lowering a priority is always permitted). Runs at process exit.
 */
export function restoreSessionGroup(): void {
  if (sessionGroupBefore === undefined) return;
  try {
    writeFileSync(AUTOGROUP, String(sessionGroupBefore));
  } catch {
    // the session is gone, or /proc is: nothing to give back
  }
  sessionGroupBefore = undefined;
  sessionGroup = undefined;
}
