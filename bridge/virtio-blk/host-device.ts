// The app VM's virtio-blk front end as a device of the app VM's worker:
// requests go out on the block channel, replies come back on it.
import type { DeviceContext, HostDevice } from "../../hypervisor/vm/host-device.js";
import type { ChannelEndpoint } from "../channel.js";
import { decodeBlockResponse, encodeBlockRequest } from "../block-link.js";
import { VirtioBlkFrontEnd } from "./device.js";

/** How long the app VM's worker looks for replies after its guest halts with requests out. */
const HALT_POLL_US = 250;

export function virtioBlkDevice(ctx: DeviceContext, capacitySectors: number): HostDevice {
  const frontEnd = VirtioBlkFrontEnd.create(ctx.machine, capacitySectors, (kind, detail) => ctx.peerViolation("block", `virtio-blk ${kind}: ${detail}`));
  let endpoint: ChannelEndpoint | undefined;
  // A reply from a busy disk VM comes within a few hundred us: waiting for
  // it costs the worker less than a sleep, a wake-up and the guest's own
  // (docs/benchmarks.md). One request at a time that was a third more IOPS.
  ctx.machine.pollWhileHalted(HALT_POLL_US, () => frontEnd.awaitingReplies());
  return {
    name: "virtio-blk",
    service: "block",
    attachChannel(channel) {
      endpoint?.close();
      const ep = ctx.openChannel(channel);
      endpoint = ep;
      // Borrowed: a read's data goes from the ring straight into the guest's
      // buffers (onResponse keeps nothing of it).
      ep.onMessage(
        (msg) => {
          const resp = decodeBlockResponse(msg);
          if ("code" in resp) frontEnd.metrics.violation("malformed"), ctx.peerViolation("block", `disk VM sent a malformed reply: ${resp.code}: ${resp.detail}`);
          else frontEnd.onResponse(resp);
          frontEnd.retryUnsent();
        },
        { borrow: true },
      );
      frontEnd.attach({ send: (req) => ep.send(encodeBlockRequest(req)), poll: () => ep.poll() });
    },
    detachChannel() {
      endpoint?.close();
      endpoint = undefined;
      frontEnd.detach();
    },
    failPeer(reason) {
      endpoint?.close();
      endpoint = undefined;
      frontEnd.failAll(reason);
    },
    getState: () => frontEnd.getState(),
    setState: (state) => frontEnd.setState(state),
    status: () => frontEnd.status(),
  };
}
