// The net VM's back end on the host side: it puts the app VM's frames into
// netback's ring A and takes the frames netback received from the NIC out of
// ring B. netback is untrusted: every index and length it writes is
// checked, a lie is counted and reported, and nothing it writes reaches the
// app VM unless it is a well-formed frame.
import type { Machine } from "../../hypervisor/v86/adapter.js";
import { NetMetrics } from "../../bridge/virtio-net/metrics.js";
import { frameProblem } from "../../bridge/frame-message.js";
import type { GuestWindow } from "../window.js";
import { NET_RING as R, toGuestSlot, toHostSlot } from "./frame-ring.js";

/** Frames for netback that found ring A full wait here, up to this many. */
const BACKLOG_MAX = 256;
/** An RI edge can fall between two of netback's waits: ring again if ring A sits unread this long. */
const RERING_MS = 10;
/** Violations are all counted; only one in this many is reported. */
const REPORT_EVERY = 100;

export type NetBackEndDrop = "no-window" | "netback-ring-full" | "from-netback-malformed" | "ring-overrun";

export class NetBackEnd {
  /** Out: frames the host put into ring A. In: frames taken from ring B. */
  readonly metrics = new NetMetrics();
  readonly drops: Partial<Record<NetBackEndDrop, number>> = {};
  rerings = 0;
  private window: GuestWindow | undefined;
  private toGuestProd = 0;
  private toHostCons = 0;
  private readonly backlog: Uint8Array[] = [];
  private watchdog: NodeJS.Timeout | undefined;
  private lastSeenCons = -1;
  private violations = 0;

  constructor(
    private readonly machine: Machine,
    /** Rings netback's doorbell (the control line's ring-indicator). */
    private readonly kick: () => void,
    /**
     * A frame netback gave us, checked, for the app VM: a view, to be copied
     * before the guest runs again. False when it cannot be taken now (the
     * channel is full): the frame stays in ring B, and ring B's later ones
     * behind it, until the next onDoorbell().
     */
    private readonly onFrame: (frame: Uint8Array) => boolean,
    private readonly onViolation: (detail: string) => void,
  ) {}

  get ready(): boolean {
    return this.window !== undefined;
  }

  /** netback registered its window (at boot, or again after a restore). */
  attachWindow(window: GuestWindow): void {
    if (window.readU32(this.machine, R.OFF_MAGIC) !== R.MAGIC) throw new Error("netback's window has no ring magic");
    this.window = window;
    // Our indices continue where the window says: after a restore, netback's own copies came from the same snapshot.
    this.toGuestProd = window.readU32(this.machine, R.OFF_TO_GUEST_PROD);
    this.toHostCons = window.readU32(this.machine, R.OFF_TO_HOST_CONS);
    this.onDoorbell();
  }

  /** A frame from the app VM, for the wire; it may be a view into the channel, so the backlog keeps a copy. */
  send(frame: Uint8Array): void {
    // Before netback registers its window (a restored VM registers it again) frames wait in the backlog.
    if (!this.window || this.backlog.length > 0 || !this.put(frame)) {
      if (this.backlog.length >= BACKLOG_MAX) return this.drop(this.window ? "netback-ring-full" : "no-window");
      this.backlog.push(frame.slice());
    }
    this.armWatchdog();
  }

  /**
   * netback rang: take what it put into ring B, and refill ring A. Frames
   * the app VM's side cannot take now stay in ring B: netback stops taking
   * frames from its socket's receive ring while ring B is full, so a burst
   * waits there rather than being dropped here.
   */
  onDoorbell(): void {
    const w = this.window;
    if (!w) return;
    const prod = w.readU32(this.machine, R.OFF_TO_HOST_PROD);
    let pending = (prod - this.toHostCons) >>> 0;
    if (pending > R.SLOTS) {
      this.drop("ring-overrun");
      this.violation(`netback claims ${pending} frames in a ring of ${R.SLOTS}`);
      this.toHostCons = prod;
      pending = 0;
    }
    for (; pending > 0; pending--) {
      const slot = toHostSlot(this.toHostCons);
      const length = w.readU32(this.machine, slot);
      const problem = frameProblem(length);
      if (problem) {
        this.drop("from-netback-malformed");
        this.violation(`netback put a ${problem} frame of ${length} bytes into its ring`);
      } else {
        // A slot never crosses a page: the frame goes from guest memory straight into the channel.
        if (!this.onFrame(w.view(this.machine, slot + R.SLOT_HEADER, length))) break;
        this.metrics.received(length);
      }
      this.toHostCons = (this.toHostCons + 1) >>> 0;
    }
    w.writeU32(this.machine, R.OFF_TO_HOST_CONS, this.toHostCons);
    this.drainBacklog();
  }

  /** Counters, with what netback itself reports in its window. */
  status(): Record<string, unknown> {
    const w = this.window;
    return {
      ready: this.ready,
      ...this.metrics.snapshot(),
      drops: { ...this.metrics.drops, ...this.drops },
      rerings: this.rerings,
      backlog: this.backlog.length,
      netback: w
        ? // As netback reports them: it may lie, and they are only shown.
          { droppedOnReceive: w.readU32(this.machine, R.OFF_TO_HOST_DROPPED), invalidSlots: w.readU32(this.machine, R.OFF_TO_GUEST_INVALID) }
        : null,
    };
  }

  stop(): void {
    clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  /** Into ring A; false when it is full. */
  private put(frame: Uint8Array): boolean {
    const w = this.window!;
    const cons = w.readU32(this.machine, R.OFF_TO_GUEST_CONS);
    const used = (this.toGuestProd - cons) >>> 0;
    if (used > R.SLOTS) {
      // A consumer index ahead of ours or far behind is a lie: count it, treat the ring as full.
      this.drop("ring-overrun");
      this.violation(`netback's ring A consumer index ${cons} is impossible (producer ${this.toGuestProd})`);
      return false;
    }
    if (used === R.SLOTS) return false;
    const slot = toGuestSlot(this.toGuestProd);
    w.writeU32(this.machine, slot, frame.length);
    w.copyIn(this.machine, slot + R.SLOT_HEADER, frame);
    this.toGuestProd = (this.toGuestProd + 1) >>> 0;
    w.writeU32(this.machine, R.OFF_TO_GUEST_PROD, this.toGuestProd);
    this.metrics.sent(frame.length);
    // netback sleeps only when ring A is empty: ring when this frame is the only one.
    if (used === 0) this.kick();
    return true;
  }

  private drainBacklog(): void {
    while (this.backlog.length > 0 && this.window && this.put(this.backlog[0])) this.backlog.shift();
  }

  /** While ring A holds frames netback has not taken, check it keeps moving. */
  private armWatchdog(): void {
    if (this.watchdog) return;
    this.watchdog = setTimeout(() => {
      this.watchdog = undefined;
      const w = this.window;
      if (!w) return;
      this.drainBacklog();
      const cons = w.readU32(this.machine, R.OFF_TO_GUEST_CONS);
      if (cons === this.toGuestProd && this.backlog.length === 0) {
        this.lastSeenCons = -1;
        return;
      }
      if (cons === this.lastSeenCons) {
        this.rerings++;
        this.kick();
      }
      this.lastSeenCons = cons;
      this.armWatchdog();
    }, RERING_MS);
  }

  private drop(reason: NetBackEndDrop): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
  }

  private violation(detail: string): void {
    if (this.violations++ % REPORT_EVERY === 0) this.onViolation(detail);
  }
}
