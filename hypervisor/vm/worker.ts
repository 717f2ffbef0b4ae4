// A VM task's body: one worker thread running one v86 instance. It owns
// nothing but its machine; the main thread decides everything else.
import { performance } from "node:perf_hooks";
import { flipBits } from "../faults/flip.js";
import { ChannelPoller } from "./channel-poller.js";
import { createHash } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { V86AdapterError, createMachine, type Machine } from "../v86/adapter.js";
import type { FromWorker, StartFailure, ToWorker, WorkerData } from "./messages.js";
import type { HostDevice } from "./host-device.js";
import { buildDevices } from "./devices.js";
import { ImageFile } from "../../drivervm/disk/image-file.js";
import { setThreadNice } from "./priority.js";

/**
 * This thread's time on a CPU, in ms (Linux schedstat; NaN elsewhere). The
 * event loop's busy time also counts the time the thread was ready but
 * waiting for a core, which on a loaded 2-core machine is a third of it.
 */
function threadCpuMs(): number {
  try {
    return Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]) / 1e6;
  } catch {
    return NaN;
  }
}

const port = parentPort;
if (!port) throw new Error("hypervisor/vm/worker.js must run in a worker thread");
const { spec, wasm } = workerData as WorkerData;
const priority = setThreadNice(spec.nice);
post({ type: "priority", nice: priority.nice, refused: priority.refused });

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

// The devices of this VM (front ends or back ends), built with the machine.
let devices: HostDevice[] = [];
const channels = new ChannelPoller();

// Channel bytes: a lone 0x07 is a doorbell for the devices; the rest are
// lines. Lines the devices consume (their registration) stay here; the
// others go to the main thread, which validates them.
const LINE_MAX = 16384;
const KICK = 0x07;
let channelLine: number[] = [];
function onChannelByte(byte: number): void {
  if (byte === KICK) {
    for (const d of devices) d.onKick?.();
  } else if (byte === 0x0a) {
    const line = Buffer.from(channelLine).toString("latin1").replace(/\r$/, "");
    channelLine = [];
    const words = line.split(" ");
    if (words[0] === "BH1" && words.length >= 2 && devices.some((d) => d.onControlLine?.(words[1], words.slice(2)))) return;
    post({ type: "channel", line });
  } else if (channelLine.length < LINE_MAX) {
    channelLine.push(byte);
  }
}

/** A snapshot file: our devices' state (JSON) in front of v86's state. */
const SNAPSHOT_MAGIC = 0x31534842; // "BHS1"
function packSnapshot(deviceState: unknown, v86State: ArrayBuffer): Uint8Array {
  const json = Buffer.from(JSON.stringify(deviceState));
  const out = new Uint8Array(8 + json.length + v86State.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, SNAPSHOT_MAGIC, true);
  view.setUint32(4, json.length, true);
  out.set(json, 8);
  out.set(new Uint8Array(v86State), 8 + json.length);
  return out;
}
function unpackSnapshot(file: ArrayBuffer): { deviceState: Record<string, unknown>; v86State: ArrayBuffer } {
  const view = new DataView(file);
  if (file.byteLength < 8 || view.getUint32(0, true) !== SNAPSHOT_MAGIC) throw new Error("not a Bulkhead snapshot");
  const len = view.getUint32(4, true);
  if (8 + len > file.byteLength) throw new Error("snapshot header runs past the file");
  const deviceState = JSON.parse(Buffer.from(file, 8, len).toString("utf8")) as Record<string, unknown>;
  return { deviceState, v86State: file.slice(8 + len) };
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
  const diskDevice = spec.devices.find((d) => d.kind === "physical-disk");
  const diskImage = diskDevice?.kind === "physical-disk" ? new ImageFile(diskDevice.imagePath) : undefined;
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
      disk: diskImage,
    });
    devices = buildDevices(spec.devices, {
      machine,
      sendControl: (line) => machine.sendSerial(1, Buffer.from(line + "\n", "latin1")),
      // The ring-indicator line wakes a helper in TIOCMIWAIT from the interrupt handler.
      kick: () => machine.flipRingIndicator(1),
      violation: (detail) => post({ type: "violation", detail }),
      peerViolation: (service, detail) => post({ type: "violation", detail, peer: service }),
      ready: () => post({ type: "device-ready" }),
      openChannel: (descriptor) => channels.open(descriptor),
    }, diskImage);
    machine.onSlice((asleep) => channels.afterSlice(asleep));
  } catch (err) {
    throw startFailure(err, "machine");
  }
  machine.onSerialByte(0, (byte) => {
    consoleBuf.push(byte);
    if (byte === 0x0a || consoleBuf.length >= 4096) flushConsole();
    else consoleTimer ??= setTimeout(flushConsole, 5);
  });
  machine.onSerialByte(1, onChannelByte);
  machine.onReset(() => post({ type: "cpu-reset" }));
  let t1 = t0;
  if (state) {
    // A spare: everything is built; restore only when the main thread says so.
    post({ type: "prepared", ms: performance.now() - t0 });
    await nextMessage("resume");
    t1 = performance.now();
    try {
      const { deviceState, v86State } = unpackSnapshot(state);
      await machine.restoreState(v86State);
      for (const d of devices) if (deviceState[d.name] !== undefined) d.setState?.(deviceState[d.name]);
    } catch (err) {
      throw startFailure(err, "corrupt-state");
    }
  }
  await machine.run();
  for (const d of devices) d.onRun?.();
  if (state) for (const d of devices) d.afterRestore?.();
  post({ type: "loaded", restored: state !== undefined, ms: performance.now() - t1 });
  return machine;
}

async function saveState(machine: Machine, path: string): Promise<void> {
  const t0 = performance.now();
  try {
    await machine.stop();
    channels.sleep();
    const deviceState: Record<string, unknown> = {};
    for (const d of devices) if (d.getState) deviceState[d.name] = d.getState();
    const bytes = packSnapshot(deviceState, await machine.saveState());
    await machine.run();
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    writeFileSync(`${path}.tmp`, bytes);
    renameSync(`${path}.tmp`, path);
    post({ type: "state-saved", bytes: bytes.byteLength, sha256, ms: performance.now() - t0 });
  } catch (err) {
    post({ type: "state-failed", message: (err as Error).message });
  }
}

// Messages that arrive before the machine runs (a channel handed over
// while a restore is under way) wait here and are handled in order.
let handleMessage: ((msg: ToWorker) => void) | undefined;
const early: ToWorker[] = [];
port.on("message", (msg: ToWorker) => {
  if (msg.type === "resume") return; // consumed by start()
  // At any stage, a spare waiting to be restored included.
  if (msg.type === "die") process.exit(70);
  if (handleMessage) handleMessage(msg);
  else early.push(msg);
});

start().then(
  (machine) => {
    // v86 counts guest instructions in 32 bits, which wrap within a minute
    // of busy guest; sampled every 2 s they add up to a 64-bit-safe total.
    let instructions = 0;
    let lastCounter = machine.instructionCounter();
    const countInstructions = () => {
      const now = machine.instructionCounter();
      instructions += (now - lastCounter) >>> 0;
      lastCounter = now;
      return instructions;
    };
    setInterval(() => {
      const m = process.memoryUsage();
      post({ type: "memory", heapBytes: m.heapUsed, externalBytes: m.external });
      countInstructions();
    }, 2000).unref();
    handleMessage = (msg: ToWorker) => {
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
        case "flip":
          try {
            post({ type: "flipped", flips: flipBits(machine, msg.ranges, msg.bits, msg.seed) });
          } catch (err) {
            post({ type: "flipped", flips: [], error: (err as Error).message });
          }
          break;
        case "die":
          process.exit(70);
        // Each channel goes to the device that serves its service.
        case "attach-channel":
          for (const d of devices) if (d.service === msg.service) d.attachChannel?.(msg.channel);
          break;
        case "detach-channel":
          for (const d of devices) if (d.service === msg.service) d.detachChannel?.();
          break;
        case "fail-channel":
          for (const d of devices) if (d.service === msg.service) d.failPeer?.(msg.reason);
          break;
        case "cpu-status":
          // The event loop's active time is the worker's busy time: v86 runs inside it.
          post({
            type: "cpu-status",
            instructions: countInstructions(),
            busyMs: performance.eventLoopUtilization().active,
            cpuMs: threadCpuMs(),
            spinMs: devices.reduce((sum, d) => sum + (d.spinMs?.() ?? 0), machine.haltPollMs()),
          });
          break;
        case "device-status":
          post({ type: "device-status", devices: Object.fromEntries(devices.map((d) => [d.name, d.status?.() ?? null])) });
          break;
        case "stop":
          void machine
            .stop()
            .then(() => (channels.sleep(), machine.destroy()))
            .finally(() => {
              post({ type: "stopped" });
              process.exit(0);
            });
          break;
      }
    };
    for (const msg of early.splice(0)) handleMessage(msg);
  },
  (err: Error & { kind?: StartFailure }) => {
    post({ type: "start-failed", kind: err.kind ?? "machine", message: err.message });
  },
);
