// The v86 adapter: the only module that touches v86, and the only one that
// reaches into its internals (`emulator.v86`). Everything it needs from the
// minified npm build is named in INTERNALS and checked at start-up, so a
// different v86 fails here with a clear message instead of misbehaving later.
import { createRequire } from "node:module";
import { V86, type V86Options } from "v86";

export const PINNED_V86_VERSION = "0.5.462";

const require = createRequire(import.meta.url);

/** The version string of the installed v86 package ("0.5.462+g5f9a90f"). */
export function installedV86Version(): string {
  const pkg = require("v86/package.json") as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "unknown";
}

export class V86AdapterError extends Error {
  override readonly name = "V86AdapterError";
}

// Shapes of the v86 internals we use. They mirror v86's own source
// (src/main.js, src/cpu.js, src/pci.js) at the pinned version.
interface PciBus {
  devices: Array<unknown>;
  device_spaces: Array<Int32Array | undefined>;
}
interface CpuDevices {
  pci: PciBus;
  [name: string]: unknown;
}
interface Cpu {
  devices: CpuDevices;
  // A Proxy over the wasm memory that builds a fresh view on every access:
  // read its offset and length once, then make our own view.
  mem8: { byteOffset: number; length: number };
  wasm_memory: WebAssembly.Memory;
  reboot_internal: () => void;
}
interface V86Core {
  cpu: Cpu;
  yield: (t: number, tick: number) => void;
  running: boolean;
}

/** Every internal the adapter relies on, checked by selfCheck(). */
const INTERNALS: Array<[string, (core: V86Core) => boolean]> = [
  ["emulator.v86.cpu", (c) => typeof c.cpu === "object" && c.cpu !== null],
  ["emulator.v86.yield (function)", (c) => typeof c.yield === "function"],
  ["emulator.v86.cpu.devices.pci.devices (array)", (c) => Array.isArray(c.cpu?.devices?.pci?.devices)],
  ["emulator.v86.cpu.devices.pci.device_spaces (array)", (c) => Array.isArray(c.cpu?.devices?.pci?.device_spaces)],
  ["emulator.v86.cpu.mem8 (memory view)", (c) => typeof c.cpu?.mem8?.byteOffset === "number" && c.cpu.mem8.length > 0],
  ["emulator.v86.cpu.wasm_memory", (c) => c.cpu?.wasm_memory instanceof WebAssembly.Memory],
  ["emulator.v86.cpu.reboot_internal (function)", (c) => typeof c.cpu?.reboot_internal === "function"],
];

function core(emulator: V86): V86Core {
  const c = (emulator as unknown as { v86?: V86Core }).v86;
  if (!c) throw new V86AdapterError("v86 internals are not available before the emulator-loaded event");
  return c;
}

/**
 * Fails with a clear message when the installed v86 is not the pinned one or
 * lacks an internal the adapter uses.
 */
export function selfCheck(emulator: V86): void {
  const version = installedV86Version();
  if (!version.startsWith(PINNED_V86_VERSION)) {
    throw new V86AdapterError(
      `v86 adapter self-check failed: Bulkhead is pinned to v86 ${PINNED_V86_VERSION}, found ${version}. ` +
        `Run \`npm ci\` to install the pinned version.`,
    );
  }
  const c = (emulator as unknown as { v86?: V86Core }).v86;
  const missing = c ? INTERNALS.filter(([, ok]) => !safe(() => ok(c))).map(([name]) => name) : ["emulator.v86"];
  if (missing.length > 0) {
    throw new V86AdapterError(
      `v86 adapter self-check failed against v86 ${version} (pinned ${PINNED_V86_VERSION}): ` +
        `missing ${missing.join(", ")}`,
    );
  }
}

function safe(f: () => boolean): boolean {
  try {
    return f();
  } catch {
    return false;
  }
}

/** A serial port of the machine: 0 is the console, 1 the control channel. */
export type SerialPort = 0 | 1;

export interface MachineSpec {
  memoryBytes: number;
  bios: ArrayBuffer;
  vgaBios: ArrayBuffer;
  /**
   * Boot a kernel, or build the machine and wait for restoreState(): a
   * machine built ahead of need (a spare) restores in a fraction of the
   * time a new one takes.
   */
  boot: { kind: "kernel"; bzimage: ArrayBuffer; initrd: ArrayBuffer; cmdline: string } | { kind: "restore-later" };
  /** The NIC model, or none at all. */
  nic: "ne2k" | "virtio" | "none";
  /** PCI slots (device numbers) to take off the bus before the guest runs. */
  removePciSlots: number[];
  /** Clamp v86's sub-millisecond busy-wait (see V86-NOTES.md, "Idle CPU"). */
  clampIdle: boolean;
  /** v86's wasm, compiled once (compileV86Wasm) and shared between workers. */
  wasmModule?: WebAssembly.Module;
}

/** Compiles v86's wasm once; the module can be posted to any worker. */
export async function compileV86Wasm(): Promise<WebAssembly.Module> {
  const { readFile } = await import("node:fs/promises");
  return WebAssembly.compile(await readFile(require.resolve("v86/build/v86.wasm")));
}

/** The machine as the rest of Bulkhead sees it: typed, narrow, no internals. */
export interface Machine {
  readonly emulator: V86;
  onSerialByte(port: SerialPort, listener: (byte: number) => void): void;
  sendSerial(port: SerialPort, data: Uint8Array): void;
  saveState(): Promise<ArrayBuffer>;
  /** Loads a saved state into a machine that has not run yet (boot: restore-later). */
  restoreState(state: ArrayBuffer): Promise<void>;
  run(): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
  /** Resets the CPU (the guest reboots), as a triple fault would. */
  resetCpu(): void;
  /** The guest's physical memory (a fresh view: do not keep it across a memory growth). */
  memory(): Uint8Array;
  /** PCI functions on the bus: bus:device.function and vendor:device ids. */
  pciFunctions(): Array<{ bdf: number; vendor: number; device: number }>;
}

const NIC_SLOTS: Record<string, number> = { ne2k: 0x05, virtio: 0x0a };

/**
 * Creates and starts a machine. Resolves once the emulator is loaded, the
 * self-check passed and the adapter's changes are in place; the guest has
 * not run an instruction before that.
 */
export function createMachine(spec: MachineSpec): Promise<Machine> {
  const options: V86Options = {
    wasm_path: require.resolve("v86/build/v86.wasm"),
    memory_size: spec.memoryBytes,
    vga_memory_size: 2 * 1024 * 1024,
    bios: { buffer: spec.bios },
    vga_bios: { buffer: spec.vgaBios },
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    acpi: true,
    uart1: true,
    // One built-in virtio device stays enabled: later device models need its VirtIO class.
    virtio_console: true,
    net_device: { type: spec.nic === "virtio" ? "virtio" : "ne2k" },
    // A restored VM keeps its identity: the NIC's MAC comes from the snapshot.
    preserve_mac_from_state_image: true,
    log_level: 0,
  } as unknown as V86Options;
  const wasmModule = spec.wasmModule;
  if (wasmModule) {
    (options as { wasm_fn?: unknown }).wasm_fn = async (env: WebAssembly.Imports) =>
      (await WebAssembly.instantiate(wasmModule, env)).exports;
  }
  if (spec.boot.kind === "kernel") {
    options.bzimage = { buffer: spec.boot.bzimage };
    options.initrd = { buffer: spec.boot.initrd };
    options.cmdline = spec.boot.cmdline;
  }
  const removeSlots = [...spec.removePciSlots];
  if (spec.nic === "none") removeSlots.push(NIC_SLOTS.ne2k);

  return new Promise((resolve, reject) => {
    let emulator: V86;
    try {
      emulator = new V86(options);
    } catch (err) {
      reject(err);
      return;
    }
    emulator.add_listener("emulator-loaded", () => {
      try {
        selfCheck(emulator);
        const c = core(emulator);
        if (spec.clampIdle) clampIdle(c);
        for (const slot of removeSlots) removePciSlot(c, slot);
        resolve(wrap(emulator, removeSlots));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/**
 * v86 spins on setImmediate when its next timer is under 1 ms away; an idle
 * guest then burns a quarter of a core. Waiting a whole millisecond instead
 * costs nothing measurable in throughput (V86-NOTES.md).
 */
function clampIdle(c: V86Core): void {
  const original = c.yield.bind(c);
  c.yield = (t: number, tick: number) => original(t > 0 && t < 1 ? 1 : t, tick);
}

/** Takes every function of a PCI slot off the bus: the guest never sees it. */
function removePciSlot(c: V86Core, slot: number): void {
  const pci = c.cpu.devices.pci;
  for (let fn = 0; fn < 8; fn++) {
    const bdf = (slot << 3) | fn;
    pci.devices[bdf] = undefined;
    pci.device_spaces[bdf] = undefined;
  }
}

function wrap(emulator: V86, removeSlots: number[]): Machine {
  return {
    emulator,
    onSerialByte(port, listener) {
      emulator.add_listener(port === 0 ? "serial0-output-byte" : "serial1-output-byte", listener);
    },
    sendSerial(port, data) {
      emulator.serial_send_bytes(port, data);
    },
    saveState: () => emulator.save_state(),
    async restoreState(state) {
      await emulator.restore_state(state);
      // The state carries PCI config space: take removed slots off again.
      for (const slot of removeSlots) removePciSlot(core(emulator), slot);
    },
    run: () => emulator.run(),
    stop: () => emulator.stop(),
    destroy: () => emulator.destroy(),
    resetCpu() {
      core(emulator).cpu.reboot_internal();
    },
    memory() {
      const cpu = core(emulator).cpu;
      const { byteOffset, length } = cpu.mem8;
      return new Uint8Array(cpu.wasm_memory.buffer, byteOffset, length);
    },
    pciFunctions() {
      const pci = core(emulator).cpu.devices.pci;
      const out: Array<{ bdf: number; vendor: number; device: number }> = [];
      pci.device_spaces.forEach((space, bdf) => {
        if (!space) return;
        out.push({ bdf, vendor: space[0] & 0xffff, device: (space[0] >>> 16) & 0xffff });
      });
      return out;
    },
  };
}
