// The application VM's virtio-net device: a real virtio PCI function whose
// stock Linux driver (virtio_net) sends and receives Ethernet frames. Frames
// the guest sends go out on the net link; frames from the link go into the
// receive buffers the guest has posted. The link stays up in the guest
// while the net VM reboots: frames in the gap are dropped and counted, and
// TCP retransmits them.
import { addVirtioDevice, type Machine, type VirtioDevice, type VirtioRequest } from "../../hypervisor/v86/adapter.js";
import { MAX_FRAME, frameProblem } from "../frame-message.js";
import { RecoveryClock } from "../recovery.js";
import { Coalescer, SEGMENT_HEADERS } from "./coalesce.js";
import { NetMetrics } from "./metrics.js";

/** The virtio-net PCI function's place in the app VM (a free slot). */
export const VIRTIO_NET_SLOT = 0x0e;
/** The app VM's MAC address: fixed, so that a DHCP lease outlives a restore. */
export const APP_MAC = "52:54:00:12:34:56";

const RX = 0;
const TX = 1;
const QUEUE_SIZE = 256;
/** virtio_net_hdr with num_buffers: 12 bytes in front of every frame (VERSION_1). */
const HEADER_BYTES = 12;
/** The header of a received frame, rewritten per frame (only one is being written at a time). */
const rxHeader = new Uint8Array(HEADER_BYTES);
/** Where a transmitted frame is read out of the guest; the largest a valid one can be. */
const txScratch = new Uint8Array(HEADER_BYTES + MAX_FRAME);
const F_GUEST_CSUM = 1;
const F_GUEST_TSO4 = 7;
const F_MRG_RXBUF = 15;
/** virtio_net_hdr.flags: the checksums were verified (needs GUEST_CSUM). */
const HDR_F_DATA_VALID = 2;
const HDR_GSO_TCPV4 = 1;
/**
 * Feature bits: GUEST_CSUM 1, MTU 3, MAC 5, GUEST_TSO4 7, MRG_RXBUF 15,
 * STATUS 16. The receive offloads let merged TCP segments in (see
 * coalesce.ts), spread over several posted buffers; the guest still
 * computes its own checksums and sends frames of at most 1514 bytes. No
 * EVENT_IDX (V86-NOTES.md).
 */
export const VIRTIO_NET_FEATURES: readonly number[] = [F_GUEST_CSUM, 3, 5, F_GUEST_TSO4, F_MRG_RXBUF, 16];
const LINK_UP = 1;
const MTU = MAX_FRAME - 14;
/** Frames from the link waiting for the guest to post receive buffers. */
const BACKLOG_MAX = 512;
/** ... and their bytes: a merged segment can be 64 KiB. */
const BACKLOG_MAX_BYTES = 4 << 20;
/**
 * Frames the guest sends while the net VM reboots wait for its successor, a
 * bounded while: its TCP then sees a delay, not a loss and a retransmission
 * timeout.
 */
const HOLD_MAX = 256;
const HOLD_MS = 2000;

/** Where frames from the guest go; send() returns false when the link is down or full. */
export interface NetLink {
  send(frame: Uint8Array): boolean;
  /** Takes the frames that wait on the link now (see BlockLink.poll). */
  poll?(): void;
}

export function parseMac(mac: string): Uint8Array {
  const parts = mac.split(":").map((p) => parseInt(p, 16));
  if (parts.length !== 6 || parts.some((p) => !(p >= 0 && p <= 255))) throw new RangeError(`bad MAC address ${mac}`);
  return Uint8Array.from(parts);
}

export class VirtioNetFrontEnd {
  readonly metrics = new NetMetrics();
  readonly recovery = new RecoveryClock();
  private link: NetLink | undefined;
  private readonly backlog: Array<{ frame: Uint8Array; gsoSize: number; checked: boolean }> = [];
  private backlogBytes = 0;
  private readonly coalescer = new Coalescer((frame, gsoSize, checked) => this.enqueue(frame, gsoSize, checked));
  private readonly held: Array<{ frame: Uint8Array; at: number }> = [];
  private device!: VirtioDevice;

  constructor(private readonly onViolation: (detail: string) => void = () => {}) {}

  /** Plugs the virtio-net PCI function into a machine that has not run yet. */
  static create(machine: Machine, mac: string, onViolation?: (detail: string) => void): VirtioNetFrontEnd {
    const fe = new VirtioNetFrontEnd(onViolation);
    const macBytes = parseMac(mac);
    fe.bind(addVirtioDevice(machine, {
      name: "virtio-net",
      pciSlot: VIRTIO_NET_SLOT,
      deviceId: 0x1041,
      subsystemId: 1,
      features: [...VIRTIO_NET_FEATURES],
      queueSizes: [QUEUE_SIZE, QUEUE_SIZE],
      portBase: 0xea00,
      config: [
        ...[...macBytes].map((b, i) => ({ bytes: 1 as const, name: `mac${i}`, read: () => b })),
        { bytes: 2, name: "status", read: () => LINK_UP },
        { bytes: 2, name: "max_virtqueue_pairs", read: () => 1 },
        { bytes: 2, name: "mtu", read: () => MTU },
      ],
      onNotify: (queue) => fe.onNotify(queue),
    }));
    return fe;
  }

  /** The device the frames come from (a real virtio function, or a test's). */
  bind(device: VirtioDevice): void {
    this.device = device;
  }

  /** The guest notified a queue: frames to send (tx), or fresh receive buffers (rx). */
  onNotify(queue: number): void {
    if (queue === TX) this.onTransmit();
    else this.deliverBacklog();
    // The guest is at work on its network: frames waiting on the link go in
    // now rather than at the end of the slice of guest time.
    this.link?.poll?.();
    this.endOfBatch();
  }

  /** Connects (or reconnects) the net VM. */
  attach(link: NetLink): void {
    this.link = link;
    const now = performance.now();
    for (const { frame, at } of this.held.splice(0)) {
      if (now - at > HOLD_MS) this.metrics.drop("link-down");
      else if (!link.send(frame)) this.metrics.drop("channel-full");
      else this.metrics.sent(frame.length);
    }
  }

  /** The net VM went away: frames from the guest are dropped until attach(). */
  detach(): void {
    this.endOfBatch();
    this.link = undefined;
    this.recovery.lost();
  }

  /** The guest sent frames: each goes out on the link, or is dropped and counted. */
  private onTransmit(): void {
    for (let req = this.device.pop(TX); req; req = this.device.pop(TX)) {
      const length = req.readableBytes - HEADER_BYTES;
      const problem = req.fault ? "bad-chain" : length < 0 ? "runt" : frameProblem(length);
      if (problem) {
        this.metrics.drop("from-guest-malformed");
        this.onViolation(`app VM sent a malformed frame (${problem}: ${req.fault ?? `${length} bytes`})`);
      } else {
        // The link copies the frame into its ring at once (hold() keeps a copy): one scratch buffer serves every frame.
        const buf = txScratch.subarray(0, req.readableBytes);
        req.read(buf);
        const frame = buf.subarray(HEADER_BYTES);
        if (!this.link) this.hold(frame);
        else if (!this.link.send(frame)) this.metrics.drop("channel-full");
        else this.metrics.sent(frame.length);
      }
      this.device.complete(TX, req);
    }
  }

  private hold(frame: Uint8Array): void {
    if (this.held.length >= HOLD_MAX) return this.metrics.drop("link-down");
    this.held.push({ frame: frame.slice(), at: performance.now() });
  }

  /**
   * A frame from the net VM, already validated: into a posted buffer, or
   * the backlog. It may be a view into the channel's ring, valid only
   * during the call: the backlog keeps a copy.
   */
  receive(frame: Uint8Array): void {
    this.recovery.served();
    if (this.coalescing()) this.coalescer.push(frame);
    else this.enqueue(frame, 0, false);
  }

  /** The frames that came from the net VM together are all here: hand on what the coalescer holds. */
  endOfBatch(): void {
    this.coalescer.flush();
  }

  /** Whether the guest takes merged segments: it accepted the receive offloads and buffers that a packet may span. */
  private coalescing(): boolean {
    return this.device.accepted(F_GUEST_TSO4) && this.device.accepted(F_GUEST_CSUM) && this.device.accepted(F_MRG_RXBUF);
  }

  private enqueue(frame: Uint8Array, gsoSize: number, checked: boolean): void {
    if (this.backlog.length === 0 && this.deliver(frame, gsoSize, checked)) return;
    if (this.backlog.length >= BACKLOG_MAX || this.backlogBytes + frame.length > BACKLOG_MAX_BYTES) return this.metrics.drop("no-guest-buffer");
    this.backlog.push({ frame: frame.slice(), gsoSize, checked });
    this.backlogBytes += frame.length;
  }

  /** The guest posted receive buffers: hand it what waits. */
  private deliverBacklog(): void {
    while (this.backlog.length > 0) {
      const { frame, gsoSize, checked } = this.backlog[0]!;
      if (!this.deliver(frame, gsoSize, checked)) break;
      this.backlog.shift();
      this.backlogBytes -= frame.length;
    }
  }

  /**
   * Into the guest's posted buffers: one, or with MRG_RXBUF as many as the
   * frame needs. False when the guest has not posted enough yet (the frame
   * is kept, and so are its buffers).
   */
  private deliver(frame: Uint8Array, gsoSize: number, checked: boolean): boolean {
    if (gsoSize > 0 && !this.coalescing()) {
      // Merged before the guest's driver reset; it no longer takes such packets. TCP resends.
      this.metrics.drop("offload-withdrawn");
      return true;
    }
    const need = HEADER_BYTES + frame.length;
    const spread = this.device.accepted(F_MRG_RXBUF);
    // Every buffer the queue can hold: past that, waiting for more is waiting forever.
    const most = Math.max(1, this.device.queueSize(RX));
    const bufs: VirtioRequest[] = [];
    let room = 0;
    while (room < need) {
      const req = this.device.pop(RX);
      if (!req) {
        // Not enough posted yet: wait for the guest to post more.
        this.device.giveBack(RX, bufs.length);
        return false;
      }
      bufs.push(req);
      if (req.fault) return this.refuse(bufs, req.fault);
      room += req.writableBytes;
      if (!spread || bufs.length >= most) break;
    }
    if (room < need) return this.refuse(bufs, `${room} bytes for a frame of ${frame.length}`);
    rxHeader.fill(0);
    rxHeader[0] = checked ? HDR_F_DATA_VALID : 0;
    if (gsoSize > 0) {
      rxHeader[1] = HDR_GSO_TCPV4;
      rxHeader[2] = SEGMENT_HEADERS;
      rxHeader[4] = gsoSize & 0xff;
      rxHeader[5] = gsoSize >>> 8;
    }
    rxHeader[10] = bufs.length & 0xff;
    rxHeader[11] = bufs.length >>> 8;
    bufs[0]!.write(rxHeader);
    let at = 0;
    for (const b of bufs) at += b.write(frame.subarray(at));
    this.metrics.received(frame.length);
    this.device.completeAll(RX, bufs);
    return true;
  }

  /** The guest posted a buffer we cannot use: the frame is dropped, the buffers go back unfilled. */
  private refuse(bufs: VirtioRequest[], why: string): true {
    this.metrics.drop("guest-buffer-bad");
    this.onViolation(`app VM posted an unusable receive buffer (${why})`);
    this.device.completeAll(RX, bufs);
    return true;
  }

  status(): ReturnType<NetMetrics["snapshot"]> &
    ReturnType<RecoveryClock["snapshot"]> & { linkUp: boolean; backlog: number; held: number; coalesced: { frames: number; segments: number } } {
    const { merged, segments } = this.coalescer.stats;
    return {
      ...this.metrics.snapshot(),
      ...this.recovery.snapshot(),
      linkUp: this.link !== undefined,
      backlog: this.backlog.length,
      held: this.held.length,
      coalesced: { frames: merged, segments },
    };
  }

  getState(): unknown {
    this.endOfBatch();
    return this.device.getState();
  }

  setState(state: unknown): void {
    this.device.setState(state);
  }
}
