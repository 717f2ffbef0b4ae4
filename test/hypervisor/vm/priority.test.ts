import { describe, expect, it } from "vitest";
import { Worker } from "node:worker_threads";
import { getPriority } from "node:os";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { errnoName } from "../../../dist/hypervisor/vm/priority.js";
import { hasCapSysNice } from "../../integration/helpers.js";

const PRIORITY_JS = new URL("../../../dist/hypervisor/vm/priority.js", import.meta.url).href;
const REFUSED = /^(EACCES|EPERM) \(a negative nice value needs CAP_SYS_NICE or a matching RLIMIT_NICE\)$/;

/** Runs setThreadNice(nice) in a fresh worker thread and returns what it reported. */
function inWorker(nice: number): Promise<{ nice: number; refused?: string }> {
  const code = `
    const { parentPort } = require("node:worker_threads");
    import(${JSON.stringify(PRIORITY_JS)}).then((m) => parentPort.postMessage(m.setThreadNice(${nice})));
  `;
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once("message", (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once("error", reject);
  });
}

describe("setThreadNice", () => {
  it("sets the calling thread's nice value and leaves the rest of the process alone", async (ctx) => {
    const before = getPriority(0);
    if (before >= 19) ctx.skip(); // nothing higher to set
    // A higher nice value is always allowed, so this holds for any user.
    const r = await inWorker(Math.min(before + 3, 19));
    expect(r).toEqual({ nice: Math.min(before + 3, 19) });
    expect(getPriority(0)).toBe(before);
  });

  it("sets a negative value where permitted, and otherwise says why and keeps the process's own", async () => {
    const r = await inWorker(-10);
    if (hasCapSysNice()) expect(r).toEqual({ nice: -10 });
    else if (r.refused !== undefined) {
      expect(r.refused).toMatch(REFUSED);
      expect(r.nice).toBe(getPriority(0));
    } else expect(r.nice).toBe(-10); // allowed by RLIMIT_NICE
  });

  it("leaves the thread as it is when asked for 0", async () => {
    expect(await inWorker(0)).toEqual({ nice: getPriority(0) });
  });

  it("names the errno of Node's SystemError, which keeps it in info.code", () => {
    const systemError = Object.assign(new Error("setpriority"), { code: "ERR_SYSTEM_ERROR", info: { code: "EACCES", errno: 13 } });
    expect(errnoName(systemError)).toMatch(REFUSED);
    expect(errnoName(Object.assign(new Error("x"), { code: "EPERM" }))).toMatch(REFUSED);
    expect(errnoName(Object.assign(new Error("x"), { code: "ESRCH" }))).toBe("ESRCH");
  });
});

describe("raiseSessionGroup", () => {
  it("raises the session's group where permitted and gives its value back", (ctx) => {
    if (!hasCapSysNice() || readFileSync("/proc/sys/kernel/sched_autogroup_enabled", "utf8").trim() !== "1") ctx.skip();
    // In a session of its own (setsid), so its group starts at 0 whatever other tests did to ours.
    const code = `
      const m = await import(${JSON.stringify(PRIORITY_JS)});
      const before = m.sessionGroupNice();
      const raised = m.raiseSessionGroup(-5);
      const during = m.sessionGroupNice();
      m.restoreSessionGroup();
      console.log(JSON.stringify({ before, raised, during, after: m.sessionGroupNice() }));
    `;
    const r = spawnSync("setsid", [process.execPath, "--input-type=module", "-e", code], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ before: 0, raised: { nice: -5 }, during: -5, after: 0 });
  });
});
