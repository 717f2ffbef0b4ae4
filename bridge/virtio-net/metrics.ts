// Counters of a network path, for `bulkhead status`: frames and bytes each
// way, and every dropped frame under the reason it was dropped.

export type DropReason =
  /** The net VM is away (rebooting, or given up). */
  | "link-down"
  /** The channel to the peer was full. */
  | "channel-full"
  /** The guest sent a runt, oversized or unreadable frame. */
  | "from-guest-malformed"
  /** The peer sent a message that is not a valid frame. */
  | "from-peer-malformed"
  /** The guest had no receive buffer posted and the backlog was full. */
  | "no-guest-buffer"
  /** The guest posted a receive buffer outside its memory or too small. */
  | "guest-buffer-bad"
  /** A merged segment waited while the guest's driver reset and no longer takes one. */
  | "offload-withdrawn";

export class NetMetrics {
  framesOut = 0;
  bytesOut = 0;
  framesIn = 0;
  bytesIn = 0;
  readonly drops: Partial<Record<DropReason, number>> = {};

  sent(bytes: number): void {
    this.framesOut++;
    this.bytesOut += bytes;
  }

  received(bytes: number): void {
    this.framesIn++;
    this.bytesIn += bytes;
  }

  drop(reason: DropReason): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
  }

  snapshot(): { framesOut: number; bytesOut: number; framesIn: number; bytesIn: number; drops: Partial<Record<DropReason, number>> } {
    return { framesOut: this.framesOut, bytesOut: this.bytesOut, framesIn: this.framesIn, bytesIn: this.bytesIn, drops: { ...this.drops } };
  }
}
