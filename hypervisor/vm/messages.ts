// Messages between a VM's worker thread and the hypervisor's main thread.
import type { Service } from "../kernel/capability.js";
import type { NicModel } from "./spec.js";

/** A host-side device model in a VM's worker. */
export type DeviceSpec =
  /** The app VM's virtio-blk front end. */
  | { kind: "virtio-blk"; capacitySectors: number }
  /** A physical IDE disk (primary master) backed by the image file. */
  | { kind: "physical-disk"; imagePath: string }
  /** The disk VM's block back end (needs the physical disk). */
  | { kind: "block-backend" }
  /** The app VM's virtio-net front end. */
  | { kind: "virtio-net"; mac: string }
  /** The cable from the machine's NE2000 to the wire process's socket. */
  | { kind: "wire"; socketPath: string }
  /** The net VM's frame back end (netback's rings). */
  | { kind: "net-backend" };

/** What a worker needs to build its machine. Files are read in the worker. */
export interface WorkerSpec {
  role: string;
  memoryBytes: number;
  nic: NicModel;
  removePciSlots: number[];
  clampIdle: boolean;
  bios: string;
  vgaBios: string;
  bzimage: string;
  initrd: string;
  cmdline: string;
  /** Host-side device models beside the machine. */
  devices: DeviceSpec[];
  /** Resume from this snapshot instead of a cold boot. */
  state?: { path: string; sha256: string };
  /** Nice value for the worker thread (0: the process's own). */
  nice: number;
}

export interface WorkerData {
  spec: WorkerSpec;
  /** v86's wasm, compiled once by the main thread. */
  wasm?: WebAssembly.Module;
}

export type ToWorker =
  | { type: "resume" }
  | { type: "console-input"; data: Uint8Array }
  | { type: "channel-send"; line: string }
  | { type: "save-state"; path: string }
  | { type: "reset-cpu" }
  | { type: "attach-channel"; service: Service; channel: unknown }
  | { type: "detach-channel"; service: Service }
  | { type: "fail-channel"; service: Service; reason: string }
  | { type: "device-status" }
  | { type: "cpu-status" }
  /** Fault injection: flip random bits in these kernel code ranges (virtual addresses). */
  | { type: "flip"; ranges: Array<{ start: number; end: number }>; bits: number; seed: number }
  /** Fault injection: the worker dies abruptly, as a crashed task would. */
  | { type: "die" }
  | { type: "stop" };

export type StartFailure = "corrupt-state" | "adapter" | "machine";

export type FromWorker =
  | { type: "prepared"; ms: number }
  /** Sent first: the worker thread's nice value, and why the one asked for was not set. */
  | { type: "priority"; nice: number; refused?: string }
  | { type: "loaded"; restored: boolean; ms: number }
  | { type: "start-failed"; kind: StartFailure; message: string }
  | { type: "console"; data: Uint8Array }
  | { type: "channel"; line: string }
  | { type: "state-saved"; bytes: number; sha256: string; ms: number }
  | { type: "state-failed"; message: string }
  | { type: "memory"; heapBytes: number; externalBytes: number }
  /** A protocol violation: by this VM's guest, or (peer) by the other end of a service's channel. */
  | { type: "violation"; detail: string; peer?: Service }
  /** The guest's CPU reset (triple fault or reboot): the VM as booted is gone. */
  | { type: "cpu-reset" }
  | { type: "device-ready" }
  | { type: "flipped"; flips: Array<{ virtual: number; physical: number; bit: number }>; error?: string }
  | { type: "device-status"; devices: Record<string, unknown> }
  /** Guest instructions executed since this worker's machine started, the worker's busy time and its thread's CPU time. */
  | { type: "cpu-status"; instructions: number; busyMs: number; cpuMs: number; spinMs: number }
  | { type: "stopped" };
