// The wire: the user-mode network behind the net VM's NIC, a host process
// (slirp-wire, libslirp inside) that the hypervisor starts and stops. It
// lives outside every VM's worker, as a cable outlives the machine plugged
// into it: TCP connections and DHCP leases survive a net VM reboot. It
// serves DHCP and DNS, and lets guests reach host services on 127.0.0.1 at
// the gateway address, on the ports its policy allows.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { createWriteStream, rmSync, type WriteStream } from "node:fs";

/** The addresses the wire hands out (libslirp's defaults). */
export const WIRE_NET = { network: "10.0.2.0/24", gateway: "10.0.2.2", dns: "10.0.2.3", firstLease: "10.0.2.15" } as const;

export interface WireOptions {
  /** The slirp-wire binary (images/host-tools.ts builds it). */
  binary: string;
  socketPath: string;
  /** Host loopback ports the guests may reach at the gateway: "all" or a list. */
  allowPorts?: "all" | number[];
  /** stderr of the wire process goes here. */
  logPath: string;
}

const READY_TIMEOUT_MS = 5000;
const RESTART_MS = 200;

export class Wire extends EventEmitter {
  private child: ChildProcess | undefined;
  private stopping = false;
  private log: WriteStream | undefined;
  /** How many times the wire process died and was started again. */
  restarts = 0;
  lastExit: string | undefined;

  constructor(readonly opts: WireOptions) {
    super();
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null;
  }

  /** Starts the wire process; resolves once its socket listens. */
  start(): Promise<void> {
    this.stopping = false;
    this.log ??= createWriteStream(this.opts.logPath, { flags: "a" });
    const ports = this.opts.allowPorts ?? "all";
    const child = spawn(this.opts.binary, ["--socket", this.opts.socketPath, "--allow-ports", ports === "all" ? "all" : ports.join(",")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stderr!.pipe(this.log, { end: false });
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error(`the wire (${this.opts.binary}) did not start within ${READY_TIMEOUT_MS} ms; see ${this.opts.logPath}`)), READY_TIMEOUT_MS);
      const fail = (err: Error) => {
        clearTimeout(timer);
        child.kill("SIGKILL");
        reject(err);
      };
      child.on("error", (err) => fail(new Error(`cannot start the wire (${this.opts.binary}): ${err.message}`)));
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("ready\n")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        if (!out.includes("ready\n")) return reject(new Error(`the wire exited (${signal ?? code}) before it was ready; see ${this.opts.logPath}`));
        if (this.stopping) return;
        // The wire died: TCP connections through it are lost, but the machines' cables re-plug into its successor.
        this.lastExit = `${signal ?? `exit ${code}`}`;
        this.restarts++;
        this.emit("exit", this.lastExit);
        setTimeout(() => {
          if (!this.stopping) this.start().then(() => this.emit("restarted"), (err: Error) => this.emit("failed", err));
        }, RESTART_MS);
      });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.opts.socketPath, { force: true });
    this.log?.end();
    this.log = undefined;
  }
}
