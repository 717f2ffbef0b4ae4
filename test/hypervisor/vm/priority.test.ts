import { describe, expect, it } from "vitest";
import { Worker } from "node:worker_threads";
import { getPriority } from "node:os";

const PRIORITY_JS = new URL("../../../dist/hypervisor/vm/priority.js", import.meta.url).href;

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
  it("sets the calling thread's nice value and leaves the rest of the process alone", async () => {
    const before = getPriority(0);
    // A higher nice value is always allowed, so this holds for any user.
    const r = await inWorker(before + 3);
    expect(r).toEqual({ nice: before + 3 });
    expect(getPriority(0)).toBe(before);
  });

  it("reports a refused negative value with the reason, or sets it where permitted", async () => {
    const r = await inWorker(-10);
    if (process.getuid?.() === 0) expect(r).toEqual({ nice: -10 });
    else {
      expect(r.refused).toMatch(/^(EACCES|EPERM) \(a negative nice value needs root or CAP_SYS_NICE\)$/);
      expect(r.nice).toBe(getPriority(0));
    }
  });

  it("leaves the thread as it is when asked for 0", async () => {
    expect(await inWorker(0)).toEqual({ nice: getPriority(0) });
  });
});
