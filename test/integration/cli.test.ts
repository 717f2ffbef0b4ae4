// The bulkhead command, run as a user would run it.
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, tempDir } from "./helpers.js";

const CLI = join(import.meta.dirname, "../../dist/hypervisor/cli.js");

function bulkhead(runDir: string, ...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, BULKHEAD_RUN_DIR: runDir }, encoding: "utf8", timeout: 120_000 });
}

describe("bulkhead CLI", () => {
  it("`run -- uname -m` prints i686 from the app VM and exits with the command's status", () => {
    const dir = tempDir("cli");
    const r = bulkhead(dir, "run", "--", "uname", "-m");
    expect(r.stdout).toBe("i686\n");
    expect(r.status).toBe(0);
    expect(bulkhead(dir, "run", "--", "echo out; exit 3")).toMatchObject({ stdout: "out\n", status: 3 });
  });

  it("`up` in one process, `status`, `run` and `down` from others", async () => {
    const dir = tempDir("cli");
    const up = spawn(process.execPath, [CLI, "up", "--no-attach"], { env: { ...process.env, BULKHEAD_RUN_DIR: dir }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    up.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => up.on("exit", (code) => resolve(code)));
    try {
      expect(await eventually(() => out.includes("All VMs ready"), 90_000, 100)).toBe(true);
      const status = bulkhead(dir, "status", "--json");
      expect(status.status).toBe(0);
      const report = JSON.parse(status.stdout) as { vms: Array<{ role: string; state: string }>; inventory: { functions: unknown[] } };
      expect(report.vms.map((v) => `${v.role}:${v.state}`)).toEqual(["app:ready", "disk:ready", "net:ready", "pci:ready"]);
      expect(report.inventory.functions.length).toBeGreaterThanOrEqual(2);
      expect(bulkhead(dir, "status").stdout).toMatch(/^ne2k \(Realtek RTL-8029 \(NE2000\) Ethernet\)\s+net\s+0000:00:05\.0/m);
      expect(bulkhead(dir, "run", "--", "hostname")).toMatchObject({ stdout: "app\n", status: 0 });
      const crash = bulkhead(dir, "crash", "disk", "--fault", "panic");
      expect(crash.status).toBe(0);
      expect(crash.stdout).toMatch(/^disk: \+0\.00 s fault-injected: panic$/m);
      expect(crash.stdout).toMatch(/^disk: \+\d+\.\d\d s fault: panic: .*Kernel panic - not syncing/m);
      expect(crash.stdout).toMatch(/^disk: \+\d+\.\d\d s restarted: restore boot \(\d+(\.\d)? ms\)$/m);
      expect(bulkhead(dir, "run", "--", "dd if=/dev/vda bs=4k count=4 iflag=direct 2>/dev/null | wc -c")).toMatchObject({ stdout: "16384\n", status: 0 });
      const events = JSON.parse(bulkhead(dir, "events", "--json").stdout) as Array<{ vm: string; kind: string }>;
      expect(events.filter((e) => e.vm === "disk").map((e) => e.kind)).toEqual(expect.arrayContaining(["fault-injected", "fault", "restarted"]));
      expect(bulkhead(dir, "crash", "app").stderr).toMatch(/Invalid values:|Choices/);
      expect(bulkhead(dir, "down")).toMatchObject({ stdout: "setup stopped\n", status: 0 });
      expect(await exited).toBe(0);
      expect(existsSync(join(dir, "control.json"))).toBe(false);
    } finally {
      up.kill("SIGKILL");
    }
  });

  it("`bench` runs a benchmark script with its own options, and refuses an unknown one", () => {
    const dir = tempDir("cli");
    const help = bulkhead(dir, "bench", "disk", "--help");
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^usage: bulkhead bench disk \[--rounds N\]/);
    expect(help.stdout).toMatch(/--warmup SECONDS/);
    const bad = bulkhead(dir, "bench", "net", "--rounds", "zero");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--rounds must be a number >= 1/);
    expect(bulkhead(dir, "bench", "boot", "--fast")).toMatchObject({ status: 2, stderr: expect.stringMatching(/^bench: Unknown option '--fast'/) });
    const unknown = bulkhead(dir, "bench", "tape");
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr).toMatch(/Choices: "boot", "disk", "net"/);
  });

  it("says clearly when no setup is running", () => {
    const r = bulkhead(tempDir("cli"), "status");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^bulkhead: no Bulkhead setup is running .*start one with `bulkhead up`/);
  });

  it("documents every command in --help", () => {
    const r = bulkhead(tempDir("cli"), "--help");
    for (const cmd of ["up", "run", "status", "down", "restart", "crash", "events", "images"]) expect(r.stdout).toContain(`bulkhead ${cmd}`);
  });
});
