// The channels of a VM's worker, looked at between slices of guest time.
// While the guest runs, v86 hands control back to the event loop after every
// slice (about 1 ms) anyway, and a message that arrives meanwhile could not
// be handled sooner. So while the machine runs, each channel is polled after
// every slice and the peer skips Atomics.notify, which measured tens to
// hundreds of microseconds a call when the two busy threads contend
// (docs/benchmarks.md). When the machine sleeps until its next timer, the
// channels are marked asleep and the peer's doorbell wakes this thread.
import { ChannelEndpoint, type ChannelDescriptor } from "../../bridge/channel.js";

export class ChannelPoller {
  private readonly endpoints = new Set<ChannelEndpoint>();
  private awake = false;

  /** Opens this side of a channel (marked asleep until the next slice). */
  open(descriptor: unknown): ChannelEndpoint {
    const ep = new ChannelEndpoint(descriptor as ChannelDescriptor);
    // The ring may come from a reader that died awake: say so afresh.
    ep.setAwake(false);
    this.endpoints.add(ep);
    void ep.stopped.then(() => this.endpoints.delete(ep));
    return ep;
  }

  /** After a slice: poll every channel, or mark them asleep (which polls once more). */
  afterSlice(asleep: boolean): void {
    const awake = !asleep;
    const changed = awake !== this.awake;
    this.awake = awake;
    for (const ep of this.endpoints) {
      if (awake) {
        if (changed) ep.setAwake(true);
        ep.poll();
      } else if (changed) ep.setAwake(false);
    }
  }

  /** The machine stops running slices: every channel must wake us again. */
  sleep(): void {
    this.afterSlice(true);
  }
}
