// The v86 adapter: the only module that touches v86, and the only one that
// reaches into its internals (`emulator.v86`). Everything it needs from the
// minified npm build is named in INTERNALS and checked at start-up, so a
// different v86 fails here with a clear message instead of misbehaving later.
import { createRequire } from "node:module";
import { V86, type V86Options } from "v86";
import { DescriptorChain, popChain, pushUsed, type GuestRam, type QueueRegisters } from "../../bridge/virtio/virtqueue.js";

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
/** One I/O port's handlers; v86 calls them with the registering device as `this`. */
interface IoPortEntry {
  write8: (this: unknown, value: number) => void;
  device: unknown;
}
interface IoPorts {
  register_write(port: number, device: object, w8?: (value: number) => void, w16?: (value: number) => void, w32?: (value: number) => void): void;
  ports: IoPortEntry[];
}
/** v86's NE2000 model (src/ne2k.js): the receive ring's registers, in 256-byte pages. */
interface Ne2kModel {
  /** First I/O port of the NIC's registers. */
  port: number;
  cr: number;
  isr: number;
  pstart: number;
  pstop: number;
  curpg: number;
  boundary: number;
  receive(frame: Uint8Array): void;
  do_interrupt(mask: number): void;
}
interface Cpu {
  io: IoPorts;
  devices: CpuDevices;
  // A Proxy over the wasm memory that builds a fresh view on every access:
  // read its offset and length once, then make our own view.
  mem8: { byteOffset: number; length: number };
  wasm_memory: WebAssembly.Memory;
  reboot_internal: () => void;
  /** Writes guest memory and invalidates JIT code compiled from it. */
  write_blob: (blob: Uint8Array, address: number) => void;
  /** Invalidates JIT code compiled from guest memory [start, end) (a device wrote it). */
  jit_dirty_cache: (start: number, end: number) => void;
  /** Control registers; cr[3] is the page directory's physical address. */
  cr: { [index: number]: number };
  /** Guest instructions executed, modulo 2^32 (a proxy over wasm memory, like mem8). */
  instruction_counter: { [index: number]: number };
}
interface V86Core {
  cpu: Cpu;
  yield: (t: number, tick: number) => void;
  running: boolean;
  /** True while the emulator sleeps until its next timer. */
  idle: boolean;
  next_tick: (t: number) => void;
  /** Bumped by every next_tick: a slice scheduled since we looked. */
  tick_counter: number;
}

/** Every internal the adapter relies on, checked by selfCheck(). */
const INTERNALS: Array<[string, (core: V86Core) => boolean]> = [
  ["emulator.v86.cpu", (c) => typeof c.cpu === "object" && c.cpu !== null],
  ["emulator.v86.yield (function)", (c) => typeof c.yield === "function"],
  ["emulator.v86.next_tick (function)", (c) => typeof c.next_tick === "function"],
  ["emulator.v86.idle (boolean)", (c) => typeof c.idle === "boolean"],
  ["emulator.v86.tick_counter (number)", (c) => typeof c.tick_counter === "number"],
  ["emulator.v86.cpu.devices.pci.devices (array)", (c) => Array.isArray(c.cpu?.devices?.pci?.devices)],
  ["emulator.v86.cpu.devices.pci.device_spaces (array)", (c) => Array.isArray(c.cpu?.devices?.pci?.device_spaces)],
  ["emulator.v86.cpu.mem8 (memory view)", (c) => typeof c.cpu?.mem8?.byteOffset === "number" && c.cpu.mem8.length > 0],
  ["emulator.v86.cpu.wasm_memory", (c) => c.cpu?.wasm_memory instanceof WebAssembly.Memory],
  ["emulator.v86.cpu.reboot_internal (function)", (c) => typeof c.cpu?.reboot_internal === "function"],
  ["emulator.v86.cpu.write_blob (function)", (c) => typeof c.cpu?.write_blob === "function"],
  ["emulator.v86.cpu.jit_dirty_cache (function)", (c) => typeof c.cpu?.jit_dirty_cache === "function"],
  ["emulator.v86.cpu.io.register_write (function)", (c) => typeof c.cpu?.io?.register_write === "function"],
  ["emulator.v86.cpu.cr (control registers)", (c) => typeof c.cpu?.cr?.[3] === "number"],
  ["emulator.v86.cpu.instruction_counter (a 32-bit counter view)", (c) => typeof c.cpu?.instruction_counter?.[0] === "number"],
  [
    "emulator.v86.cpu.devices.net (NE2000: receive, do_interrupt, cr, isr, pstart, pstop, curpg, boundary)",
    (c) => {
      const n = c.cpu?.devices?.net as Partial<Ne2kModel> | undefined;
      return !!n && typeof n.receive === "function" && typeof n.do_interrupt === "function" && ["port", "cr", "isr", "pstart", "pstop", "curpg", "boundary"].every((k) => typeof n[k as keyof Ne2kModel] === "number");
    },
  ],
  [
    "emulator.v86.cpu.io.ports (an entry with write8 and device per port; the NE2000's ISR register at its port + 7)",
    (c) => {
      const n = c.cpu?.devices?.net as Partial<Ne2kModel> | undefined;
      const isr = typeof n?.port === "number" ? c.cpu?.io?.ports?.[n.port | EN0_ISR] : undefined;
      return typeof isr?.write8 === "function" && isr.device === n;
    },
  ],
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
  /**
   * The NE2000, or none at all. (The app VM's virtio-net is our own device
   * model, built with addVirtioDevice like virtio-blk, so that its queues
   * are bounds-checked and its receive path paced.)
   */
  nic: "ne2k" | "none";
  /** PCI slots (device numbers) to take off the bus before the guest runs. */
  removePciSlots: number[];
  /** Clamp v86's sub-millisecond busy-wait (see V86-NOTES.md, "Idle CPU"). */
  clampIdle: boolean;
  /** v86's wasm, compiled once (compileV86Wasm) and shared between workers. */
  wasmModule?: WebAssembly.Module;
  /** A physical IDE disk (primary master) whose contents live outside the machine. */
  disk?: DiskStore;
}

/**
 * Backing store of a physical disk. Reads and writes are synchronous: when
 * write() returns, the bytes are in the store (for the image file: in the
 * host's page cache, so they outlive the VM's worker).
 */
export interface DiskStore {
  readonly sizeBytes: number;
  read(offset: number, length: number): Uint8Array;
  /** Fills `target` from `offset` (zeros past the end); returns how many bytes it read. */
  readInto(offset: number, target: Uint8Array): number;
  write(offset: number, data: Uint8Array): void;
}

/**
 * v86's disk buffer interface (get/set/load, and state that holds nothing).
 * A class, not an object literal: v86's state saver prints plain objects.
 */
class DiskBuffer {
  readonly byteLength: number;
  onload: undefined | ((e: unknown) => void);

  constructor(private readonly store: DiskStore) {
    this.byteLength = store.sizeBytes;
  }

  load(): void {
    this.onload?.({});
  }

  /**
   * v86's IDE model uses what `get` hands it before returning (a DMA read
   * copies it into guest memory, a PIO read into its own buffer), so one
   * scratch buffer serves every read: no 64 KiB garbage per request.
   */
  get(start: number, length: number, done: (data: Uint8Array) => void): void {
    if (this.scratch.length < length) this.scratch = new Uint8Array(length);
    const data = this.scratch.subarray(0, length);
    data.fill(0, this.store.readInto(start, data));
    done(data);
  }
  private scratch = new Uint8Array(0);

  // The store is synchronous: v86's "cached" path is always a hit.
  get_from_cache(start: number, length: number): Uint8Array {
    return this.store.read(start, length);
  }

  // v86 reads the boot sector through this before the machine starts.
  get_and_cache(start: number, length: number, done: (data: Uint8Array) => void): void {
    done(this.store.read(start, length));
  }

  set(start: number, data: Uint8Array, done: () => void): void {
    this.store.write(start, data);
    done();
  }

  // The disk's contents never enter a snapshot: they are in the store.
  get_state(): unknown[] {
    return [];
  }

  set_state(): void {}

  get_buffer(done: (b: ArrayBuffer | undefined) => void): void {
    done(undefined);
  }
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
  /** Called whenever the CPU resets: a triple fault, a guest reboot, or resetCpu(). */
  onReset(listener: () => void): void;
  /** Lets a sleeping emulator handle an interrupt a host device just raised. */
  wake(): void;
  /**
   * Called after every slice of guest time, outside the guest: `asleep` when
   * the emulator now sleeps until its next timer (or a wake()), otherwise it
   * runs the next slice as soon as the event loop lets it.
   */
  onSlice(listener: (asleep: boolean) => void): void;
  /**
   * When the guest halts while `wanted()` holds (a host device expects an
   * answer soon), the worker keeps calling the slice listeners as if the
   * guest ran (they look at the channels) for up to `microseconds` before
   * it sleeps; a device that wakes the guest meanwhile ends the wait. A
   * sleep and wake-up of the worker thread and of the guest costs more than
   * a short wait.
   */
  pollWhileHalted(microseconds: number, wanted: () => boolean): void;
  /**
   * Milliseconds this worker has spent in those waits so far: CPU spent
   * looking for work, not doing it (the benchmarks keep the two apart).
   */
  haltPollMs(): number;
  /** Flips a serial port's ring-indicator line (a modem-status interrupt in the guest). */
  flipRingIndicator(port: SerialPort): void;
  /**
   * Claims an I/O port as a doorbell: a guest `outb` to it calls `onWrite`
   * at once, inside the instruction (cheaper than any guest syscall).
   */
  claimDoorbellPort(port: number, onWrite: (value: number) => void): void;
  /** Copies bytes into guest physical memory (and drops JIT code compiled from them). */
  writePhysical(address: number, data: Uint8Array): void;
  /** The guest's physical memory (a fresh view: do not keep it across a memory growth). */
  memory(): Uint8Array;
  /** PCI functions on the bus: bus:device.function and vendor:device ids. */
  pciFunctions(): Array<{ bdf: number; vendor: number; device: number }>;
  /**
   * Translates a virtual address through the guest's current page tables
   * (32-bit paging without PAE, as our kernel uses: 4 KiB and 4 MiB pages);
   * undefined when it is not mapped or paging is off.
   */
  translate(virtual: number): number | undefined;
  /** The NE2000, for a machine built with nic "ne2k". */
  ne2k(): Nic;
  /**
   * Guest instructions executed so far, modulo 2^32 (it wraps within a
   * minute of busy guest: sample it more often than that). A measure of
   * guest work that the host's noise does not move.
   */
  instructionCounter(): number;
}

/** A NIC model's wire side: what the host plugs a cable into. */
export interface Nic {
  /** Frames the guest transmits. */
  onTransmit(listener: (frame: Uint8Array) => void): void;
  /**
   * Whether the NIC can take a frame of this length now. v86's NE2000 drops
   * silently when its receive ring is full, so the host asks first.
   */
  canReceive(length: number): boolean;
  /** Called when the guest has taken frames from the receive ring and acknowledged them. */
  onRoom(listener: () => void): void;
  /**
   * Raises the receive interrupt again if frames wait in the ring. Linux's
   * 8390 driver acknowledges RX after taking at most 10 frames, so a frame
   * that arrived meanwhile can lose its interrupt; real hardware recovers
   * through an overrun interrupt that v86's model never raises.
   */
  nudge(): void;
  /** Puts a frame on the NIC's receive path and lets the guest take the interrupt. */
  receive(frame: Uint8Array): void;
}

/**
 * The guest takes frames out of the receive ring and then acknowledges the
 * receive interrupt (it clears ISR bit 0 by writing the ISR register); v86
 * tells no one. Wrapping the handler of that register's port lets the host
 * deliver the next frames right after that acknowledgment, which raises a
 * fresh interrupt that the driver's loop picks up. (Delivering earlier,
 * while the driver still reads the ring, loses the interrupt of what
 * arrives before its acknowledgment.)
 *
 * The port's handler, not the model's `isr` field: turning that field into
 * an accessor (Object.defineProperty) put the whole NE2000 object into V8's
 * slow dictionary mode, and every register access of the model, four per
 * 32-bit read of the data port, went through a generic lookup: 45% of the
 * net VM's worker during a download (docs/benchmarks.md).
 */
const ackWatchers = new WeakMap<object, Array<() => void>>();
/** Exported for its unit test; `io` is v86's I/O port table. */
export function watchRxAck(io: { ports: IoPortEntry[] }, model: Pick<Ne2kModel, "port" | "isr">): Array<() => void> {
  let listeners = ackWatchers.get(model);
  if (listeners) return listeners;
  const all: Array<() => void> = [];
  listeners = all;
  ackWatchers.set(model, all);
  const entry = io.ports[model.port | EN0_ISR];
  const write = entry.write8;
  entry.write8 = function (this: unknown, value: number) {
    const before = model.isr;
    write.call(this, value);
    if (before & ENISR_RX && !(model.isr & ENISR_RX)) for (const l of all) l();
  };
  return all;
}

/** The NE2000's interrupt status register, at this offset from its first port. */
const EN0_ISR = 0x07;
const ENISR_RX = 0x01;

/**
 * Whether a frame fits in the NE2000's receive ring without touching frames
 * the driver has not read. The driver keeps BNRY one page behind the next
 * frame it will read, so the NIC may write from CURR up to, not into, BNRY:
 * (BNRY - CURR) mod ring pages, and CURR == BNRY means full. v86's own check
 * reads CURR == BNRY as empty and writes over unread frames; the driver then
 * finds a bad next-page pointer and throws the whole ring away (rx_errors),
 * and TCP stalls for a retransmission timeout. So we never hand v86 a frame
 * its check would wrongly accept.
 */
export function ne2kRoom(ring: { curpg: number; boundary: number; pstart: number; pstop: number }): number {
  const pages = ring.pstop - ring.pstart;
  if (pages <= 0) return 0;
  return (((ring.boundary - ring.curpg) % pages) + pages) % pages;
}

/** Pages a frame of `length` bytes takes in the ring, as v86 and the driver count them (header included). */
export function ne2kPagesFor(length: number): number {
  return 1 + ((Math.max(60, length) + 4) >> 8);
}

function ne2kCanReceive(n: Ne2kModel, length: number): boolean {
  if (n.cr & 1) return false;
  // A driver that never set BNRY (0) takes frames as v86 gives them.
  if (n.boundary === 0) return true;
  return ne2kRoom(n) >= ne2kPagesFor(length);
}

/** v86's NE2000 sits in PCI slot 5; it is built unless virtio-net is chosen. */
const NE2K_SLOT = 0x05;

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
    // v86 always builds its NE2000 model; "none" takes it off the PCI bus.
    net_device: { type: "ne2k" },
    // A restored VM keeps its identity: the NIC's MAC comes from the snapshot.
    preserve_mac_from_state_image: true,
    log_level: 0,
  } as unknown as V86Options;
  const wasmModule = spec.wasmModule;
  if (wasmModule) {
    (options as { wasm_fn?: unknown }).wasm_fn = async (env: WebAssembly.Imports) =>
      (await WebAssembly.instantiate(wasmModule, env)).exports;
  }
  if (spec.disk) (options as { hda?: unknown }).hda = new DiskBuffer(spec.disk);
  if (spec.boot.kind === "kernel") {
    options.bzimage = { buffer: spec.boot.bzimage };
    options.initrd = { buffer: spec.boot.initrd };
    options.cmdline = spec.boot.cmdline;
  }
  const removeSlots = [...spec.removePciSlots];
  if (spec.nic === "none") removeSlots.push(NE2K_SLOT);

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
        const { slices, haltPolls } = hookYield(c, spec.clampIdle);
        for (const slot of removeSlots) removePciSlot(c, slot);
        resolve(wrap(emulator, removeSlots, slices, haltPolls));
      } catch (err) {
        reject(err);
      }
    });
  });
}

interface HaltPolls {
  polls: Array<{ microseconds: number; wanted: () => boolean }>;
  /** Time spent in them so far. */
  spentMs: number;
}

/**
 * v86 hands control back to the event loop after every slice of guest time
 * through `yield(t)`: t = 0 runs the next slice at once, t > 0 sleeps until
 * the next guest timer. The hook tells slice listeners which it is, once the
 * next slice is scheduled (a listener that wakes the machine reschedules it).
 *
 * With `clamp`: v86 spins on setImmediate when its next timer is under 1 ms
 * away, and an idle guest then burns a quarter of a core. Waiting a whole
 * millisecond instead costs nothing measurable in throughput (V86-NOTES.md).
 *
 * With a halt poll that is wanted (Machine.pollWhileHalted), a halted guest
 * first gets a short busy wait in which the listeners look at the channels.
 */
function hookYield(c: V86Core, clamp: boolean): { slices: Array<(asleep: boolean) => void>; haltPolls: HaltPolls } {
  const listeners: Array<(asleep: boolean) => void> = [];
  const haltPolls: HaltPolls = { polls: [], spentMs: 0 };
  const original = c.yield.bind(c);
  let inside = false;
  /** Looks at the channels for a while; true if a device woke the guest meanwhile. */
  const pollHalted = (): boolean => {
    const poll = haltPolls.polls.find((p) => p.wanted());
    if (!poll) return false;
    const tick = c.tick_counter;
    const start = performance.now();
    const until = start + poll.microseconds / 1000;
    try {
      do {
        for (const listener of listeners) listener(false);
        if (c.tick_counter !== tick) return true;
      } while (performance.now() < until);
      return false;
    } finally {
      haltPolls.spentMs += performance.now() - start;
    }
  };
  c.yield = (t: number, tick: number) => {
    original(clamp && t > 0 && t < 1 ? 1 : t, tick);
    if (inside) return;
    inside = true;
    try {
      // Woken during the poll: the next slice is already scheduled.
      if (t > 0 && pollHalted()) return;
      for (const listener of listeners) listener(t > 0);
    } finally {
      inside = false;
    }
  };
  return { slices: listeners, haltPolls };
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

/**
 * v86 handles interrupts only inside its main loop: an interrupt that a host
 * device raises while a halted guest sleeps waits for the next guest timer
 * (tens of milliseconds with a tickless kernel). After raising one, run the
 * loop now, as v86's own stop_idling does.
 */
function wake(c: V86Core): void {
  if (c.idle && c.running) c.next_tick(0);
}

const memoryViews = new WeakMap<Cpu, Uint8Array>();
/**
 * The guest's physical memory as a view of our own. v86's mem8 is a proxy
 * that builds a new typed array on every property read, so the view is made
 * once and kept while the wasm memory's buffer stays the same one (a grown
 * memory gets a new buffer, and the view is made again).
 */
function guestMemory(cpu: Cpu): Uint8Array {
  const buffer = cpu.wasm_memory.buffer;
  const cached = memoryViews.get(cpu);
  if (cached && cached.buffer === buffer) return cached;
  const { byteOffset, length } = cpu.mem8;
  const view = new Uint8Array(buffer, byteOffset, length);
  memoryViews.set(cpu, view);
  return view;
}

function wrap(emulator: V86, removeSlots: number[], slices: Array<(asleep: boolean) => void>, haltPolls: HaltPolls): Machine {
  const ring = [false, false];
  return {
    emulator,
    onSerialByte(port, listener) {
      emulator.add_listener(port === 0 ? "serial0-output-byte" : "serial1-output-byte", listener);
    },
    sendSerial(port, data) {
      emulator.serial_send_bytes(port, data);
      wake(core(emulator));
    },
    wake: () => wake(core(emulator)),
    onSlice: (listener) => slices.push(listener),
    pollWhileHalted: (microseconds, wanted) => haltPolls.polls.push({ microseconds, wanted }),
    haltPollMs: () => haltPolls.spentMs,
    flipRingIndicator(port) {
      ring[port] = !ring[port];
      emulator.serial_set_ring_indicator(port, ring[port]);
      wake(core(emulator));
    },
    claimDoorbellPort(port, onWrite) {
      const doorbell = {};
      core(emulator).cpu.io.register_write(port, doorbell, (v) => onWrite(v & 0xff));
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
    onReset(listener) {
      // Every reset path of v86 (triple fault, keyboard controller, ACPI, PCI reset register) ends here.
      const cpu = core(emulator).cpu;
      const original = cpu.reboot_internal.bind(cpu);
      cpu.reboot_internal = () => {
        original();
        listener();
      };
    },
    writePhysical(address, data) {
      core(emulator).cpu.write_blob(data, address);
    },
    memory: () => guestMemory(core(emulator).cpu),
    instructionCounter: () => core(emulator).cpu.instruction_counter[0] >>> 0,
    ne2k() {
      const c = core(emulator);
      const model = c.cpu.devices.net as Ne2kModel;
      const room = watchRxAck(c.cpu.io, model);
      return {
        onRoom: (listener) => room.push(listener),
        onTransmit(listener) {
          (emulator.add_listener as (event: string, l: (frame: Uint8Array) => void) => void)("net0-send", listener);
        },
        canReceive: (length) => ne2kCanReceive(model, length),
        receive(frame) {
          model.receive(frame);
          wake(c);
        },
        nudge() {
          // boundary is a page behind the next frame to read: the ring is empty when that is curpg.
          const next = model.boundary + 1 >= model.pstop ? model.pstart : model.boundary + 1;
          if (model.cr & 1 || next === model.curpg) return;
          model.do_interrupt(ENISR_RX);
          wake(c);
        },
      };
    },
    translate(virtual) {
      const cpu = core(emulator).cpu;
      const cr0 = cpu.cr[0] >>> 0;
      if (!(cr0 & 0x80000000)) return undefined;
      const mem = guestMemory(cpu);
      const u32 = (addr: number) => (addr + 4 <= mem.length ? (mem[addr] | (mem[addr + 1] << 8) | (mem[addr + 2] << 16) | (mem[addr + 3] << 24)) >>> 0 : 0);
      const v = virtual >>> 0;
      const pde = u32(((cpu.cr[3] >>> 0) & 0xfffff000) + (v >>> 22) * 4);
      if (!(pde & 1)) return undefined;
      // PSE: a 4 MiB page straight from the directory.
      if (pde & 0x80) return ((pde & 0xffc00000) | (v & 0x3fffff)) >>> 0;
      const pte = u32((pde & 0xfffff000) + ((v >>> 12) & 0x3ff) * 4);
      if (!(pte & 1)) return undefined;
      return ((pte & 0xfffff000) | (v & 0xfff)) >>> 0;
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

// ---------------------------------------------------------------------------
// Our own virtio devices. v86 does not export its VirtIO class, but every
// built-in virtio device carries an instance (we keep virtio-console on for
// that reason). Guest-controlled descriptors are checked here, before v86
// would touch memory with them: a bad address must never throw in the
// device model or reach memory outside the request's own buffers.

// v86's queue object: we use its registers (set by the driver through the
// common configuration) and keep its avail index, which its snapshots save.
interface V86Queue {
  size: number;
  enabled: boolean;
  desc_addr: number;
  avail_addr: number;
  used_addr: number;
  avail_last_idx: number;
  /** Set by set_state for a state from an older v86; count_requests() fixes the index. */
  fix_wrapping?: boolean;
  count_requests(): number;
}
interface V86VirtIO {
  queues: V86Queue[];
  /** The feature bits the driver accepted, 32 per word (the offered ones until it writes them). */
  driver_feature: Uint32Array;
  /** The driver's status bits; DRIVER_OK (4) once it has set the device up. */
  device_status: number;
  raise_irq(type: number): void;
  get_state(): unknown;
  set_state(state: unknown): void;
  reset(): void;
}
type VirtIOConstructor = new (cpu: Cpu, options: unknown) => V86VirtIO;

export interface VirtioConfigField {
  bytes: 1 | 2 | 4;
  name: string;
  read: () => number;
}

export interface VirtioDeviceSpec {
  name: string;
  /** PCI device number (slot); must be free. */
  pciSlot: number;
  /** Modern virtio PCI device id (0x1040 + virtio device type). */
  deviceId: number;
  subsystemId: number;
  /** Feature bits offered; VERSION_1 (32) is added. */
  features: number[];
  queueSizes: number[];
  /** I/O ports of the capabilities (SeaBIOS relocates them anyway): four consecutive 0x100 blocks. */
  portBase: number;
  config: VirtioConfigField[];
  /** Called when the guest notifies a queue. */
  onNotify: (queue: number) => void;
}

/** One request of the guest: its buffers, checked against guest memory. */
export interface VirtioRequest {
  readonly readableBytes: number;
  readonly writableBytes: number;
  /** Why the chain is unusable (a buffer outside guest memory, over 4 GiB, ...), or null. */
  readonly fault: string | null;
  /** Reads the next bytes the guest gave us (sequentially). */
  read(dest: Uint8Array): number;
  /** Writes the next bytes into the guest's writable buffers (sequentially). */
  write(src: Uint8Array): number;
  /** Writes one byte at the very end of the writable buffers (virtio-blk's status byte). */
  writeLastByte(value: number): void;
}

export interface VirtioDevice {
  /** Pops one request; undefined when the queue is empty, unconfigured, or its ring is malformed. */
  pop(queue: number): VirtioRequest | undefined;
  /**
   * Un-takes the last `count` requests popped and not completed: the next
   * pops return them again (a packet that needs more receive buffers than
   * the guest has posted waits for more, keeping none).
   */
  giveBack(queue: number, count: number): void;
  /** Hands a request back to the guest (used ring) and interrupts it. */
  complete(queue: number, request: VirtioRequest): void;
  /** Hands several requests back at once, in order, with one interrupt. */
  completeAll(queue: number, requests: readonly VirtioRequest[]): void;
  /**
   * Whether the driver accepted a feature bit it was offered, and has set the
   * device up (DRIVER_OK): until then v86 reports every offered bit, and
   * after a reset it does so again until the driver chooses.
   */
  accepted(feature: number): boolean;
  /** The queue's size as the driver set it (0 when it has not). */
  queueSize(queue: number): number;
  queueReady(queue: number): boolean;
  getState(): unknown;
  setState(state: unknown): void;
}

const VIRTIO_F_VERSION_1 = 32;
const VIRTIO_STATUS_DRIVER_OK = 4;
/** isr_status bit: a used ring changed. */
const VIRTIO_ISR_QUEUE = 1;

/** v86's queue registers as the virtqueue code reads them, live. */
function queueRegisters(vq: V86Queue): QueueRegisters {
  for (const field of ["size", "desc_addr", "avail_addr", "used_addr", "avail_last_idx"] as const) {
    if (typeof vq[field] !== "number") throw new V86AdapterError(`v86 ${installedV86Version()}: virtqueue has no numeric ${field} (pinned ${PINNED_V86_VERSION})`);
  }
  return {
    get size() {
      return vq.size;
    },
    get desc() {
      return vq.desc_addr >>> 0;
    },
    get avail() {
      return vq.avail_addr >>> 0;
    },
    get used() {
      return vq.used_addr >>> 0;
    },
    get lastAvail() {
      if (vq.fix_wrapping) vq.count_requests();
      return vq.avail_last_idx;
    },
    set lastAvail(v: number) {
      vq.avail_last_idx = v;
    },
  };
}

/** Adds a virtio PCI device to a machine that has not run yet. */
export function addVirtioDevice(machine: Machine, spec: VirtioDeviceSpec): VirtioDevice {
  const c = core(machine.emulator);
  const carrier = c.cpu.devices.virtio_console as { virtio?: { constructor?: unknown } } | undefined;
  const VirtIO = carrier?.virtio?.constructor as VirtIOConstructor | undefined;
  if (typeof VirtIO !== "function") {
    throw new V86AdapterError(`v86 ${installedV86Version()}: no VirtIO class on devices.virtio_console (pinned ${PINNED_V86_VERSION})`);
  }
  if (c.cpu.devices.pci.device_spaces[spec.pciSlot << 3]) throw new V86AdapterError(`PCI slot 0x${spec.pciSlot.toString(16)} is taken`);
  const virtio: V86VirtIO = new VirtIO(c.cpu, {
    name: spec.name,
    pci_id: spec.pciSlot << 3,
    device_id: spec.deviceId,
    subsystem_device_id: spec.subsystemId,
    common: {
      initial_port: spec.portBase,
      queues: spec.queueSizes.map((size) => ({ size_supported: size, notify_offset: 0 })),
      features: [VIRTIO_F_VERSION_1, ...spec.features],
      on_driver_ok: () => {},
    },
    notification: { initial_port: spec.portBase + 0x100, single_handler: true, handlers: [(queue: number) => spec.onNotify(queue)] },
    isr_status: { initial_port: spec.portBase + 0x200 },
    device_specific: {
      initial_port: spec.portBase + 0x300,
      struct: spec.config.map((f) => ({ bytes: f.bytes, name: f.name, read: f.read, write: () => {} })),
    },
  });
  const ram: GuestRam = {
    bytes: () => guestMemory(c.cpu),
    written: (start, end) => c.cpu.jit_dirty_cache(start, end),
  };
  if (!(virtio.driver_feature instanceof Uint32Array) || typeof virtio.device_status !== "number") {
    throw new V86AdapterError(`v86 ${installedV86Version()}: VirtIO has no driver_feature words or device_status (pinned ${PINNED_V86_VERSION})`);
  }
  const registers = virtio.queues.map(queueRegisters);
  const queue = (q: number): V86Queue | undefined => virtio.queues[q];
  const ready = (q: number) => {
    const vq = queue(q);
    return !!vq && vq.enabled && !!vq.desc_addr && !!vq.avail_addr && !!vq.used_addr;
  };
  // Hands chains back to the used ring, with at most one interrupt; requests not from this queue are ignored.
  const pushChains = (q: number, chains: readonly DescriptorChain[]) => {
    if (chains.length === 0 || !ready(q)) return;
    if (pushUsed(ram, registers[q]!, chains)) virtio.raise_irq(VIRTIO_ISR_QUEUE);
    wake(c);
  };
  return {
    queueReady: ready,
    // A chain is the request: it reads and writes only its own checked buffers.
    pop: (q) => (ready(q) ? popChain(ram, registers[q]!) : undefined),
    giveBack(q, count) {
      const r = registers[q];
      if (r && count > 0) r.lastAvail = (r.lastAvail - count) & 0xffff;
    },
    complete: (q, request) => {
      if (request instanceof DescriptorChain) pushChains(q, [request]);
    },
    completeAll: (q, requests) => pushChains(q, requests.filter((r): r is DescriptorChain => r instanceof DescriptorChain)),
    accepted: (feature) =>
      (virtio.device_status & VIRTIO_STATUS_DRIVER_OK) !== 0 &&
      feature >= 0 &&
      feature < 128 &&
      (virtio.driver_feature[feature >>> 5]! & (1 << (feature & 31))) !== 0,
    queueSize: (q) => (ready(q) ? registers[q]!.size : 0),
    // v86's VirtIO state holds typed arrays and its queue objects: make it plain JSON.
    getState: () =>
      (virtio.get_state() as unknown[]).map((v, i) =>
        i >= 10 ? (v as { get_state(): unknown }).get_state() : ArrayBuffer.isView(v) ? Array.from(v as Uint32Array) : v,
      ),
    setState(state) {
      if (!Array.isArray(state) || state.length < 10) throw new V86AdapterError("virtio device state is not an array of at least 10 fields");
      virtio.set_state(state.map((v: unknown, i) => (i === 2 || i === 3 ? Uint32Array.from(v as number[]) : v)));
    },
  };
}
