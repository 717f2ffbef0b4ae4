// The disk VM's back end, in the disk VM's worker: block requests arrive
// from the channel, their payloads are copied into the blkback helper's
// pinned window, a descriptor goes into the shared ring, and one byte on
// the control line wakes the helper. blkback serves each request with the
// stock ata_piix driver; its replies come back the same way. The helper is
// untrusted: a reply that does not match the request at its ring position
// is a protocol violation and is not passed on.
import type { Machine } from "../../hypervisor/v86/adapter.js";
import type { BackendRequest, BackendResponse } from "../../bridge/virtio-blk/device.js";
import { RING, RING_OP, RING_STATUS, WINDOW, decodeRingResponse, encodeRingRequest } from "./guest-ring.js";
import type { ImageFile } from "./image-file.js";
import type { GuestWindow } from "../window.js";

export interface BackendMetrics {
  served: { read: number; write: number; flush: number };
  bytesRead: number;
  bytesWritten: number;
  ioErrors: number;
  violations: number;
  queued: number;
  inRing: number;
  fsyncs: number;
  /** Time from a request entering the ring to blkback's reply (guest + IDE), summed. */
  serviceMs: number;
  serviceCount: number;
  /** Doorbells rung again because a request sat unanswered for REKICK_MS. */
  rekicks: number;
  /**
   * blkback's looks at an empty ring (a doorbell with nothing to collect
   * while it says it is looking), and the time between consecutive ones:
   * the disk VM's CPU spent waiting for work rather than doing it.
   */
  looks: number;
  lookMs: number;
  /** Runs of contiguous frames in blkback's window (laid out in frame order: about 10 of 513 pages measured, one per page before). */
  windowRuns: number;
}

const REKICK_MS = 20;
/** The longest gap between two looks of one wait (see countLook). */
const LOOK_GAP_MS = 0.25;

interface Active {
  req: BackendRequest;
  dataSlot: number;
  at: number;
}

export class BlockBackEnd {
  private window: GuestWindow | undefined;
  private readonly pending: BackendRequest[] = [];
  /** Requests in the ring, oldest first (blkback may answer them in any order). */
  private readonly ring: Active[] = [];
  private readonly freeSlots: number[] = [...Array(WINDOW.DATA_SLOTS).keys()];
  private reqProd = 0;
  /** Rings again when requests sit unanswered: a doorbell can fall between two waits. */
  private watchdog: NodeJS.Timeout | undefined;
  private lastProgress = -1;
  private respCons = 0;
  /** When blkback last looked at an empty ring, if its look goes on. */
  private lookedAt = 0;
  readonly metrics: BackendMetrics = { served: { read: 0, write: 0, flush: 0 }, bytesRead: 0, bytesWritten: 0, ioErrors: 0, violations: 0, queued: 0, inRing: 0, fsyncs: 0, serviceMs: 0, serviceCount: 0, rekicks: 0, looks: 0, lookMs: 0, windowRuns: 0 };

  constructor(
    private readonly machine: Machine,
    private readonly image: ImageFile,
    private readonly kickGuest: () => void,
    /** `dataParts`: a read's data as views of the window, valid until the guest runs again. */
    private readonly reply: (resp: BackendResponse, dataParts?: Uint8Array[]) => void,
    private readonly onViolation: (detail: string) => void,
  ) {}

  get ready(): boolean {
    return this.window !== undefined;
  }

  /** The helper registered its window (after a cold boot or a restore). */
  attachWindow(window: GuestWindow): void {
    const magic = window.readU32(this.machine, RING.OFF_MAGIC);
    if (magic !== RING.MAGIC) throw new Error(`ring page has magic 0x${magic.toString(16)}, expected 0x${RING.MAGIC.toString(16)}`);
    this.window = window;
    this.metrics.windowRuns = window.runs;
    // Indices continue from what the guest last saw (after a restore, from the snapshot).
    this.reqProd = window.readU32(this.machine, RING.OFF_REQ_PROD);
    this.respCons = window.readU32(this.machine, RING.OFF_RESP_PROD);
    window.writeU32(this.machine, RING.OFF_RESP_CONS, this.respCons);
    if (this.reqProd !== this.respCons) this.violation(`ring not idle at registration: req_prod ${this.reqProd}, resp_prod ${this.respCons}`);
    this.pump();
  }

  /**
   * A request from the front end. `borrowed`: its data is a view that is
   * valid only during this call (the channel's ring): what must wait for a
   * free slot is copied.
   */
  submit(req: BackendRequest, borrowed = false): void {
    this.pending.push(req);
    this.pump();
    if (borrowed && req.data && this.pending.includes(req)) req.data = req.data.slice();
  }

  private pump(): void {
    const w = this.window;
    if (!w) return;
    let kick = false;
    // blkback reads req_prod again after every request, and for a while
    // after the last one before it sleeps, so it needs a doorbell only if it
    // had caught up and stopped looking (it may be asleep): an interrupt and
    // a wake-up in the guest saved per request while it is busy. A helper
    // that claims to look forever only goes slower: the watchdog rings anyway.
    const caughtUp = () => w.readU32(this.machine, RING.OFF_REQ_CONS) === this.reqProd && w.readU32(this.machine, RING.OFF_SPINNING) === 0;
    while (this.pending.length > 0 && this.ring.length < RING.SLOTS) {
      if (!kick && caughtUp()) kick = true;
      const req = this.pending[0];
      const needsData = req.op !== "flush";
      if (needsData && this.freeSlots.length === 0) break;
      this.pending.shift();
      const dataSlot = needsData ? this.freeSlots.shift()! : 0;
      const dataOffset = WINDOW.DATA_BASE + dataSlot * WINDOW.DATA_SLOT_BYTES;
      if (req.op === "write" && req.data) w.copyIn(this.machine, dataOffset, req.data);
      const slot = this.reqProd % RING.SLOTS;
      w.copyIn(
        this.machine,
        RING.REQ_BASE + slot * RING.REQ_SIZE,
        encodeRingRequest({ id: req.id, op: RING_OP[req.op], dataSlot, sector: req.sector, length: req.length, dataOffset: needsData ? dataOffset : 0 }),
      );
      this.reqProd = (this.reqProd + 1) >>> 0;
      w.writeU32(this.machine, RING.OFF_REQ_PROD, this.reqProd);
      this.ring.push({ req, dataSlot: needsData ? dataSlot : -1, at: performance.now() });
    }
    this.metrics.queued = this.pending.length;
    this.metrics.inRing = this.ring.length;
    if (kick) this.kickGuest();
    this.armWatchdog();
  }

  private armWatchdog(): void {
    if (this.ring.length === 0) {
      if (this.watchdog) clearInterval(this.watchdog);
      this.watchdog = undefined;
      return;
    }
    if (this.watchdog) return;
    this.lastProgress = this.respCons;
    this.watchdog = setInterval(() => {
      if (this.ring.length > 0 && this.respCons === this.lastProgress) {
        this.metrics.rekicks++;
        this.kickGuest();
      }
      this.lastProgress = this.respCons;
    }, REKICK_MS);
    this.watchdog.unref?.();
  }

  /**
   * A look takes a few microseconds; a longer gap between two means blkback
   * slept or served in between (a wake-up that found nothing), which is not
   * looking.
   */
  private countLook(looking: boolean): void {
    if (!looking) {
      this.lookedAt = 0; // a reply, or a doorbell outside a look: no clock read on the hot path
      return;
    }
    const now = performance.now();
    this.metrics.looks++;
    if (this.lookedAt && now - this.lookedAt < LOOK_GAP_MS) this.metrics.lookMs += now - this.lookedAt;
    this.lookedAt = now;
  }

  /** The helper rang: collect its replies. */
  onKick(): void {
    const w = this.window;
    if (!w) return;
    const respProd = w.readU32(this.machine, RING.OFF_RESP_PROD);
    const ready = (respProd - this.respCons) >>> 0;
    this.countLook(ready === 0 && w.readU32(this.machine, RING.OFF_SPINNING) !== 0);
    if (ready > this.ring.length) {
      return this.violation(`helper claims ${ready} replies with ${this.ring.length} requests in the ring`);
    }
    for (let i = 0; i < ready; i++) {
      const slot = this.respCons % RING.SLOTS;
      const resp = decodeRingResponse(w.copyOut(this.machine, RING.RESP_BASE + slot * RING.RESP_SIZE, RING.RESP_SIZE));
      // blkback serves several requests at once: replies come in completion order.
      const at = this.ring.findIndex((a) => a.req.id === resp.id);
      if (at < 0) return this.violation(`reply for request ${resp.id}, which is not in the ring`);
      const active = this.ring[at];
      if (resp.op !== RING_OP[active.req.op]) {
        return this.violation(`reply for ${active.req.op} request ${resp.id} says op ${resp.op}`);
      }
      this.ring.splice(at, 1);
      this.respCons = (this.respCons + 1) >>> 0;
      w.writeU32(this.machine, RING.OFF_RESP_CONS, this.respCons);
      this.complete(active, resp.status, resp.length);
    }
    this.pump();
  }

  private complete(active: Active, status: number, length: number): void {
    const { req } = active;
    this.metrics.serviceMs += performance.now() - active.at;
    this.metrics.serviceCount++;
    const ok = status === RING_STATUS.OK && (req.op === "flush" || length === req.length);
    let data: Uint8Array[] | undefined;
    if (ok && req.op === "read") {
      data = this.window!.views(this.machine, WINDOW.DATA_BASE + active.dataSlot * WINDOW.DATA_SLOT_BYTES, req.length);
      this.metrics.bytesRead += req.length;
    }
    if (ok && req.op === "write") this.metrics.bytesWritten += req.length;
    if (ok && req.op === "flush") {
      // The guest's flush reached the IDE model; make it reach the disk too.
      this.image.flush();
      this.metrics.fsyncs++;
    }
    if (active.dataSlot >= 0) this.freeSlots.push(active.dataSlot);
    if (ok) this.metrics.served[req.op]++;
    else this.metrics.ioErrors++;
    this.reply({ id: req.id, op: req.op, ok, length: ok ? req.length : 0 }, data);
  }

  private violation(detail: string): void {
    this.metrics.violations++;
    this.onViolation(detail);
  }
}
