// What the virtio-blk front end counts; shown by `bulkhead status`.
import type { RequestErrorCode } from "./request.js";

export type ViolationKind =
  | "unknown-id"
  | "wrong-op"
  | "wrong-length"
  | "malformed"
  /** Read data that does not match the checksum of what was written there. */
  | "wrong-data"
  /** An I/O error from a disk VM whose disk is a healthy file: its driver is broken. */
  | "io-error";

export class BlockMetrics {
  requests = { read: 0, write: 0, flush: 0, "get-id": 0 };
  bytesRead = 0;
  bytesWritten = 0;
  completed = 0;
  ioErrors = 0;
  refused: Partial<Record<RequestErrorCode, number>> = {};
  violations: Partial<Record<ViolationKind, number>> = {};
  replayed = 0;
  /** Writes issued again by the front end: suspect after a fault, or found damaged by a read. */
  repairs = 0;
  /** Sectors found damaged that the write log no longer held: lost, reported to the guest as an I/O error. */
  lostSectors = 0;
  /** Host time from a request leaving the guest to its reply arriving, summed over replies. */
  roundTripMs = 0;
  roundTrips = 0;

  refuse(code: RequestErrorCode): void {
    this.refused[code] = (this.refused[code] ?? 0) + 1;
  }

  violation(kind: ViolationKind): void {
    this.violations[kind] = (this.violations[kind] ?? 0) + 1;
  }

  snapshot(inFlight: number, queued: number) {
    return {
      requests: { ...this.requests },
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      completed: this.completed,
      inFlight,
      queued,
      ioErrors: this.ioErrors,
      refused: { ...this.refused },
      violations: { ...this.violations },
      replayed: this.replayed,
      repairs: this.repairs,
      lostSectors: this.lostSectors,
      meanRoundTripMs: this.roundTrips ? this.roundTripMs / this.roundTrips : 0,
    };
  }
}

export type BlockMetricsSnapshot = ReturnType<BlockMetrics["snapshot"]> & { failed: string | null; recoveries: number; lastServedAgainMs: number | null };
