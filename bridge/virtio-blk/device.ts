// The application VM's virtio-blk device: a real virtio PCI function whose
// requests are parsed here and forwarded over a channel to the disk VM. The
// guest sees a stall while the disk VM is away, never a wrong answer: every
// request without a valid reply stays in flight and is re-sent in order
// when the link comes back (the shadow-driver idea).
import { addVirtioDevice, type Machine, type VirtioDevice, type VirtioRequest } from "../../hypervisor/v86/adapter.js";
import { RecoveryClock } from "../recovery.js";
import { BufferPool } from "./buffer-pool.js";
import { WRITE_LOG_BYTES, WriteLog, WrittenChecksums, runsWhere } from "./checksums.js";
import { BlockMetrics, type ViolationKind } from "./metrics.js";
import { MAX_TRANSFER, SECTOR, VIRTIO_BLK_S, isRequestError, parseRequest } from "./request.js";

/** The virtio-blk PCI function's place in the app VM (a free slot). */
export const VIRTIO_BLK_SLOT = 0x0d;
const QUEUE_SIZE = 128;
const SEG_MAX = 64;
const SIZE_MAX = MAX_TRANSFER / SEG_MAX;
// virtio-blk feature bits: SIZE_MAX 1, SEG_MAX 2, BLK_SIZE 6, FLUSH 9. No EVENT_IDX (V86-NOTES.md).
const FEATURES = [1, 2, 6, 9];

/** A block request as it travels to the back end. */
export interface BackendRequest {
  id: number;
  op: "read" | "write" | "flush";
  sector: number;
  length: number;
  data?: Uint8Array;
  /** A write the front end issues itself, of data already acknowledged. */
  repair?: boolean;
}

/** A reply from the back end, already decoded (not yet trusted). */
export interface BackendResponse {
  id: number;
  op: "read" | "write" | "flush";
  ok: boolean;
  length: number;
  data?: Uint8Array;
}

/** The link to the disk VM; send() returns false when it is down or full. */
export interface BlockLink {
  send(req: BackendRequest): boolean;
  /**
   * Takes the replies that wait on the link now. While the guest runs, the
   * worker looks at its channels only between slices of guest time (about
   * 1 ms); the guest's own notifications are a chance to look sooner.
   */
  poll?(): void;
}

/** Writes acknowledged this long before a fault are written again to the successor: the faulty driver may have botched them. */
const SUSPECT_MS = 1000;
/** A read that comes back damaged this often, repairs notwithstanding, fails with an I/O error. */
const MAX_READ_ATTEMPTS = 3;

interface InFlight {
  /** The guest's request; none for a repair the front end issues itself. */
  vreq: VirtioRequest | undefined;
  req: BackendRequest;
  /** Damaged replies so far (reads). */
  attempts: number;
  sent: boolean;
  /** Sent to a back end that then went away: the next send is a replay. */
  orphaned: boolean;
  at: number;
}

export class VirtioBlkFrontEnd {
  readonly metrics = new BlockMetrics();
  private readonly inFlight = new Map<number, InFlight>();
  private nextId = 1;
  /** Why the back end is given up for good (restart budget spent); requests fail until attach(). */
  private failedReason: string | undefined;
  private link: BlockLink | undefined;
  private readonly checksums: WrittenChecksums;
  private readonly writeLog: WriteLog;
  /** The guest's write data; a buffer goes back when its write is done. */
  private readonly writeBuffers = new BufferPool();
  readonly recovery = new RecoveryClock();

  constructor(
    readonly capacitySectors: number,
    private readonly onViolation: (kind: ViolationKind, detail: string) => void = () => {},
  ) {
    this.checksums = new WrittenChecksums(capacitySectors);
    this.writeLog = new WriteLog(Math.min(WRITE_LOG_BYTES, capacitySectors * SECTOR), capacitySectors);
  }

  private device!: VirtioDevice;

  /** Plugs the virtio-blk PCI function into a machine that has not run yet. */
  static create(machine: Machine, capacitySectors: number, onViolation?: (kind: ViolationKind, detail: string) => void): VirtioBlkFrontEnd {
    const fe = new VirtioBlkFrontEnd(capacitySectors, onViolation);
    fe.bind(
      addVirtioDevice(machine, {
        name: "virtio-blk",
        pciSlot: VIRTIO_BLK_SLOT,
        deviceId: 0x1042,
        subsystemId: 2,
        features: FEATURES,
        queueSizes: [QUEUE_SIZE],
        portBase: 0xe600,
        config: [
          { bytes: 4, name: "capacity_lo", read: () => capacitySectors % 2 ** 32 },
          { bytes: 4, name: "capacity_hi", read: () => Math.floor(capacitySectors / 2 ** 32) },
          { bytes: 4, name: "size_max", read: () => SIZE_MAX },
          { bytes: 4, name: "seg_max", read: () => SEG_MAX },
          { bytes: 2, name: "cylinders", read: () => 0 },
          { bytes: 1, name: "heads", read: () => 0 },
          { bytes: 1, name: "sectors", read: () => 0 },
          { bytes: 4, name: "blk_size", read: () => SECTOR },
        ],
        onNotify: () => fe.onNotify(),
      }),
    );
    return fe;
  }

  /** The device the requests come from (a real virtio function, or a test's). */
  bind(device: VirtioDevice): void {
    this.device = device;
  }

  /** Connects (or reconnects) the back end: everything unanswered is sent again, in order. */
  attach(link: BlockLink): void {
    this.link = link;
    this.failedReason = undefined;
    // Repairs first: they rewrite what the guest already saw acknowledged.
    const pending = [...this.inFlight.entries()].sort(([a, fa], [b, fb]) => Number(!!fb.req.repair) - Number(!!fa.req.repair) || a - b);
    for (const [, f] of pending) {
      if (f.sent || f.orphaned) this.metrics.replayed++;
      f.sent = link.send(f.req);
      f.orphaned = false;
    }
  }

  /** The back end went away: keep every request, send none until attach(). */
  detach(): void {
    this.link = undefined;
    this.recovery.lost();
    for (const f of this.inFlight.values()) {
      f.orphaned ||= f.sent;
      f.sent = false;
    }
    // What the dead driver acknowledged just before its fault may not be on
    // disk as written. Sectors a write in flight covers get that write again anyway.
    for (const w of this.writeLog.since(performance.now() - SUSPECT_MS)) {
      for (const part of this.notInFlight(w.sector, w.data)) this.repair(part.sector, part.data);
    }
  }

  /** A write of the front end's own, of data the guest already saw acknowledged. */
  private repair(sector: number, data: Uint8Array): void {
    const req: BackendRequest = { id: this.takeId(), op: "write", sector, length: data.length, data, repair: true };
    this.metrics.repairs++;
    this.inFlight.set(req.id, { vreq: undefined, req, attempts: 0, sent: this.link ? this.link.send(req) : false, orphaned: false, at: performance.now() });
  }

  /** The runs of [sector, sector + data) that no write in flight covers. */
  private notInFlight(sector: number, data: Uint8Array): Array<{ sector: number; data: Uint8Array }> {
    if (!this.writeInFlight(sector, data.length)) return [{ sector, data }];
    return runsWhere(data.length / SECTOR, (i) => !this.writeInFlight(sector + i, SECTOR)).map(([a, b]) => ({
      sector: sector + a,
      data: data.subarray(a * SECTOR, b * SECTOR),
    }));
  }

  private writeInFlight(sector: number, length: number): boolean {
    // Runs for every acknowledged write: a plain loop, no array per call.
    const end = sector + length / SECTOR;
    for (const o of this.inFlight.values()) if (o.req.op === "write" && o.req.sector < end && o.req.sector + o.req.length / SECTOR > sector) return true;
    return false;
  }

  private takeId(): number {
    const id = this.nextId++;
    if (this.nextId > 0xffffffff) this.nextId = 1;
    return id;
  }

  /**
   * The back end is not coming back (its restart budget is spent): every
   * request in flight, and every new one, gets an I/O error instead of
   * hanging, until a new back end is attached.
   */
  failAll(reason: string): void {
    this.link = undefined;
    this.failedReason = reason;
    for (const f of [...this.inFlight.values()]) {
      if (!f.vreq) continue;
      this.metrics.ioErrors++;
      this.finish(f.vreq, VIRTIO_BLK_S.IOERR);
      this.releaseData(f.req);
    }
    this.inFlight.clear();
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Whether a back end holds requests of ours and will answer them (replies are due). */
  awaitingReplies(): boolean {
    if (!this.link) return false;
    for (const f of this.inFlight.values()) if (f.sent) return true;
    return false;
  }

  status() {
    return {
      ...this.metrics.snapshot(this.inFlight.size, [...this.inFlight.values()].filter((f) => !f.sent).length),
      ...this.recovery.snapshot(),
      failed: this.failedReason ?? null,
    };
  }

  /** Sends what could not be sent before (the channel was full). */
  retryUnsent(): void {
    if (!this.link) return;
    for (const [, f] of [...this.inFlight.entries()].sort(([a], [b]) => a - b)) {
      if (!f.sent && !(f.sent = this.link.send(f.req))) break;
    }
  }

  /** The guest notified the queue: take every request it posted. */
  onNotify(): void {
    let vreq: VirtioRequest | undefined;
    while ((vreq = this.device.pop(0))) this.accept(vreq);
    this.link?.poll?.();
  }

  private accept(vreq: VirtioRequest): void {
    const parsed = parseRequest(vreq, this.capacitySectors, (length) => this.writeBuffers.take(length));
    if (isRequestError(parsed)) {
      this.metrics.refuse(parsed.code);
      return this.finish(vreq, parsed.status);
    }
    this.metrics.requests[parsed.op]++;
    if (this.failedReason && parsed.op !== "get-id") {
      this.metrics.ioErrors++;
      if (parsed.data) this.writeBuffers.give(parsed.data);
      return this.finish(vreq, VIRTIO_BLK_S.IOERR);
    }
    if (parsed.op === "get-id") {
      vreq.write(Buffer.from("bulkhead-vda".padEnd(parsed.length, "\0")).subarray(0, parsed.length));
      return this.finish(vreq, VIRTIO_BLK_S.OK);
    }
    const req: BackendRequest = { id: this.takeId(), op: parsed.op as BackendRequest["op"], sector: parsed.sector, length: parsed.length, data: parsed.data };
    if (req.op === "write") this.checksums.forget(req.sector, req.length);
    const sent = this.link ? this.link.send(req) : false;
    this.inFlight.set(req.id, { vreq, req, attempts: 0, sent, orphaned: false, at: performance.now() });
  }

  /**
   * A reply from the back end: checked against the request it claims to
   * answer. Its data may be a borrowed view: nothing of it is kept past
   * this call.
   */
  onResponse(resp: BackendResponse): void {
    const f = this.inFlight.get(resp.id);
    if (!f) return this.violation("unknown-id", `reply to request ${resp.id}, which is not in flight`);
    if (f.req.op !== resp.op) return this.violation("wrong-op", `reply to ${f.req.op} request ${resp.id} says ${resp.op}`);
    const expected = f.req.op === "read" && resp.ok ? f.req.length : 0;
    if ((resp.data?.length ?? 0) !== expected || (resp.ok && f.req.op !== "flush" && resp.length !== f.req.length)) {
      return this.violation("wrong-length", `reply to ${f.req.op} request ${resp.id}: ${resp.data?.length ?? 0} data bytes, length ${resp.length}, expected ${f.req.length}`);
    }
    // The disk is a healthy file: an error, or data other than what was
    // written, means the disk VM's driver is broken. The request stays in
    // flight and goes to the disk VM's successor; the app VM sees a stall.
    if (!resp.ok) return this.violation("io-error", `${f.req.op} request ${resp.id} failed in the disk VM`);
    if (f.req.op === "read" && resp.data) {
      const bad = this.checksums.mismatches(f.req.sector, resp.data);
      if (bad.length > 0) return this.damagedRead(f, bad);
    }
    this.inFlight.delete(resp.id);
    if (f.vreq) this.recovery.served();
    this.metrics.roundTripMs += performance.now() - f.at;
    this.metrics.roundTrips++;
    if (f.req.op === "read" && resp.data) {
      f.vreq?.write(resp.data);
      this.metrics.bytesRead += resp.data.length;
    } else if (f.req.op === "write") {
      if (!f.req.repair) this.metrics.bytesWritten += f.req.length;
      if (f.req.data) {
        // Sectors another write still in flight covers stay unknown: either content may be read there.
        for (const part of this.notInFlight(f.req.sector, f.req.data)) this.checksums.record(part.sector, part.data);
        // The log takes it whole: a newer write that covers some of it supersedes those sectors when it is done.
        if (!f.req.repair) this.writeLog.add(f.req.sector, f.req.data);
      }
      this.releaseData(f.req);
    }
    if (f.vreq) this.finish(f.vreq, VIRTIO_BLK_S.OK);
  }

  /** A guest write is done: its data buffer serves the next one (the log and the checksums keep their own). */
  private releaseData(req: BackendRequest): void {
    if (req.op !== "write" || req.repair || !req.data) return;
    this.writeBuffers.give(req.data);
    req.data = undefined;
  }

  /**
   * A read reply with sectors other than what was written there: the disk
   * VM lies, or a faulty driver wrote them wrongly before. Either way the
   * VM is reported (the monitor replaces it), the damaged sectors are
   * written again from the log, and the read goes again after them. A
   * sector the log no longer has is lost: the read fails with an I/O error
   * and the sector is no longer checked, rather than failing forever.
   */
  private damagedRead(f: InFlight, bad: number[]): void {
    this.violation("wrong-data", `read request ${f.req.id}: ${bad.length} sectors from ${bad[0]} are not what was written there`);
    const copies = bad.map((s) => this.writeLog.sector(s));
    if (++f.attempts >= MAX_READ_ATTEMPTS || copies.some((c) => !c)) {
      this.inFlight.delete(f.req.id);
      this.metrics.lostSectors += bad.length;
      for (const s of bad) this.checksums.forget(s, SECTOR);
      this.metrics.ioErrors++;
      if (f.vreq) this.finish(f.vreq, VIRTIO_BLK_S.IOERR);
      return;
    }
    bad.forEach((s, i) => this.repair(s, copies[i]!));
    // The read goes again after its repairs, to whichever disk VM serves next.
    this.inFlight.delete(f.req.id);
    const again = { ...f, req: { ...f.req, id: this.takeId() }, sent: false, orphaned: true };
    this.inFlight.set(again.req.id, again);
    again.sent = this.link ? this.link.send(again.req) : false;
  }

  private violation(kind: ViolationKind, detail: string): void {
    this.metrics.violation(kind);
    this.onViolation(kind, detail);
  }

  /** The status byte is the last writable byte of the request. */
  private finish(vreq: VirtioRequest, status: number): void {
    vreq.writeLastByte(status);
    this.metrics.completed++;
    this.device.complete(0, vreq);
  }

  getState(): unknown {
    // Requests in flight are not part of a snapshot: it must be taken idle.
    if (this.inFlight.size > 0) throw new Error(`virtio-blk has ${this.inFlight.size} requests in flight`);
    return this.device.getState();
  }

  setState(state: unknown): void {
    this.device.setState(state);
  }
}
