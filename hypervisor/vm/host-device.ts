// Host-side device models that live in a VM's worker beside its v86
// instance: the app VM's paravirtual front ends, a driver VM's back end.
// The worker stays generic; each device plugs in through this interface.
import type { ChannelEndpoint } from "../../bridge/channel.js";
import type { Service } from "../kernel/capability.js";
import type { Machine } from "../v86/adapter.js";

/** What a device gets from its worker. */
export interface DeviceContext {
  machine: Machine;
  /** Sends a control line to the guest's helper ("BH1 ..."). */
  sendControl(line: string): void;
  /** Rings the guest helper's doorbell (the control line's ring-indicator). */
  kick(): void;
  /** Tells the main thread about a protocol violation by this VM's guest. */
  violation(detail: string): void;
  /** Tells the main thread that the other end of a service's channel lied (a lying driver VM is compromised). */
  peerViolation(service: Service, detail: string): void;
  /** Tells the main thread the device can serve (e.g. the helper's window is registered). */
  ready(): void;
  /**
   * Opens this side of a channel the kernel handed over. The worker polls it
   * after every slice of guest time while the machine runs, so the peer need
   * not wake this thread (see ChannelEndpoint.setAwake).
   */
  openChannel(descriptor: unknown): ChannelEndpoint;
}

export interface HostDevice {
  readonly name: string;
  /** The service whose channel this device uses, if any. */
  readonly service?: Service;
  /** A control line from the guest; true when the device consumed it. */
  onControlLine?(verb: string, args: string[]): boolean;
  /** The guest rang the doorbell. */
  onKick?(): void;
  /** A channel to the peer task, set up (or set up anew) by the kernel. */
  attachChannel?(channel: unknown): void;
  /** The peer is gone: stop sending, keep what is pending. */
  detachChannel?(): void;
  /** The peer is gone for good: fail what is pending, and what comes, with an error. */
  failPeer?(reason: string): void;
  /** State that must travel with a snapshot (JSON-safe). */
  getState?(): unknown;
  setState?(state: unknown): void;
  /** Called once the machine runs: after a cold boot, or a restore. A spare worker has not run yet. */
  onRun?(): void;
  /** Called once the guest runs again after a restore. */
  afterRestore?(): void;
  /** Counters for `bulkhead status`. */
  status?(): unknown;
  /** Milliseconds the guest's helper has spent looking for work so far, as far as the host can tell. */
  spinMs?(): number;
}
