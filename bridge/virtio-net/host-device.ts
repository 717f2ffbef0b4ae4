// The app VM's virtio-net front end as a device of the app VM's worker:
// frames go out on the net channel and come back on it.
import type { DeviceContext, HostDevice } from "../../hypervisor/vm/host-device.js";
import type { ChannelEndpoint } from "../channel.js";
import { encodeFrame, frameHandler } from "../frame-message.js";
import { VirtioNetFrontEnd } from "./device.js";

export function virtioNetDevice(ctx: DeviceContext, mac: string): HostDevice {
  const frontEnd = VirtioNetFrontEnd.create(ctx.machine, mac, (detail) => ctx.violation(`virtio-net: ${detail}`));
  let endpoint: ChannelEndpoint | undefined;
  const close = () => {
    endpoint?.close();
    endpoint = undefined;
    frontEnd.detach();
  };
  return {
    name: "virtio-net",
    service: "net",
    attachChannel(channel) {
      endpoint?.close();
      const ep = ctx.openChannel(channel);
      endpoint = ep;
      // Borrowed: a frame goes from the ring straight into the guest's receive buffer (the backlog keeps a copy).
      ep.onMessage(
        frameHandler(
          (frame) => frontEnd.receive(frame),
          (bad, n) => {
            frontEnd.metrics.drop("from-peer-malformed");
            // One report per burst is enough for the log; every one is counted.
            if (n % 100 === 1) ctx.peerViolation("net", `net VM sent a malformed frame message: ${bad.code}: ${bad.detail}`);
          },
        ),
        { borrow: true, onBatchEnd: () => frontEnd.endOfBatch() },
      );
      frontEnd.attach({ send: (frame) => ep.send(encodeFrame(frame)), poll: () => ep.poll() });
    },
    detachChannel: close,
    failPeer: close,
    getState: () => frontEnd.getState(),
    setState: (state) => frontEnd.setState(state),
    status: () => ({ mac, ...frontEnd.status() }),
  };
}
