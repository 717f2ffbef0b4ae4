// A VM task's body: one worker thread running one v86 instance. It owns
// nothing but its machine; the main thread decides everything else.
import { createHash } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { V86AdapterError, createMachine, type Machine } from "../v86/adapter.js";
import type { FromWorker, StartFailure, ToWorker, WorkerData } from "./messages.js";

const port = parentPort;
if (!port) throw new Error("hypervisor/vm/worker.js must run in a worker thread");
const { spec, wasm } = workerData as WorkerData;

function post(msg: FromWorker, transfer?: ArrayBuffer[]): void {
  port!.postMessage(msg, transfer ?? []);
}

function arrayBuffer(path: string): ArrayBuffer {
  const b = readFileSync(path);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

// Console bytes are batched: one message per burst, not per byte.
let consoleBuf: number[] = [];
let consoleTimer: NodeJS.Timeout | undefined;
function flushConsole(): void {
  consoleTimer = undefined;
  if (consoleBuf.length === 0) return;
  const data = Uint8Array.from(consoleBuf);
  consoleBuf = [];
  post({ type: "console", data }, [data.buffer]);
}

// Channel bytes are split into lines here; the main thread validates them.
const LINE_MAX = 16384;
let channelLine: number[] = [];
function onChannelByte(byte: number): void {
  if (byte === 0x0a) {
    post({ type: "channel", line: Buffer.from(channelLine).toString("latin1") });
    channelLine = [];
  } else if (channelLine.length < LINE_MAX) {
    channelLine.push(byte);
  }
}

function startFailure(err: unknown, kind: StartFailure): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  return Object.assign(e, { kind: err instanceof V86AdapterError ? "adapter" : kind });
}

/** The next message of a given type from the main thread. */
function nextMessage(type: ToWorker["type"]): Promise<void> {
  return new Promise((resolve) => {
    const on = (msg: ToWorker) => {
      if (msg.type === type) (port!.off("message", on), resolve());
    };
    port!.on("message", on);
  });
}

async function start(): Promise<Machine> {
  const t0 = performance.now();
  let state: ArrayBuffer | undefined;
  if (spec.state) {
    try {
      state = arrayBuffer(spec.state.path);
    } catch (err) {
      throw startFailure(new Error(`snapshot unreadable: ${(err as Error).message}`), "corrupt-state");
    }
    const digest = createHash("sha256").update(new Uint8Array(state)).digest("hex");
    if (digest !== spec.state.sha256) {
      throw startFailure(new Error(`snapshot ${spec.state.path} does not match its recorded sha256`), "corrupt-state");
    }
  }
  let machine: Machine;
  try {
    machine = await createMachine({
      memoryBytes: spec.memoryBytes,
      bios: arrayBuffer(spec.bios),
      vgaBios: arrayBuffer(spec.vgaBios),
      boot: state
        ? { kind: "restore-later" }
        : { kind: "kernel", bzimage: arrayBuffer(spec.bzimage), initrd: arrayBuffer(spec.initrd), cmdline: spec.cmdline },
      nic: spec.nic,
      removePciSlots: spec.removePciSlots,
      clampIdle: spec.clampIdle,
      wasmModule: wasm,
    });
  } catch (err) {
    throw startFailure(err, "machine");
  }
  machine.onSerialByte(0, (byte) => {
    consoleBuf.push(byte);
    if (byte === 0x0a || consoleBuf.length >= 4096) flushConsole();
    else consoleTimer ??= setTimeout(flushConsole, 5);
  });
  machine.onSerialByte(1, onChannelByte);
  let t1 = t0;
  if (state) {
    // A spare: everything is built; restore only when the main thread says so.
    post({ type: "prepared", ms: performance.now() - t0 });
    await nextMessage("resume");
    t1 = performance.now();
    try {
      await machine.restoreState(state);
    } catch (err) {
      throw startFailure(err, "corrupt-state");
    }
  }
  await machine.run();
  post({ type: "loaded", restored: state !== undefined, ms: performance.now() - t1 });
  return machine;
}

async function saveState(machine: Machine, path: string): Promise<void> {
  const t0 = performance.now();
  try {
    await machine.stop();
    const state = await machine.saveState();
    await machine.run();
    const bytes = new Uint8Array(state);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(`${path}.tmp`, bytes);
    renameSync(`${path}.tmp`, path);
    post({ type: "state-saved", bytes: bytes.byteLength, sha256, ms: performance.now() - t0 });
  } catch (err) {
    post({ type: "state-failed", message: (err as Error).message });
  }
}

start().then(
  (machine) => {
    setInterval(() => {
      const m = process.memoryUsage();
      post({ type: "memory", heapBytes: m.heapUsed, externalBytes: m.external });
    }, 2000).unref();
    port.on("message", (msg: ToWorker) => {
      switch (msg.type) {
        case "console-input":
          machine.sendSerial(0, msg.data);
          break;
        case "channel-send":
          machine.sendSerial(1, Buffer.from(msg.line + "\n", "latin1"));
          break;
        case "save-state":
          void saveState(machine, msg.path);
          break;
        case "reset-cpu":
          machine.resetCpu();
          break;
        case "die":
          process.exit(70);
        case "stop":
          void machine
            .stop()
            .then(() => machine.destroy())
            .finally(() => {
              post({ type: "stopped" });
              process.exit(0);
            });
          break;
      }
    });
  },
  (err: Error & { kind?: StartFailure }) => {
    post({ type: "start-failed", kind: err.kind ?? "machine", message: err.message });
  },
);
