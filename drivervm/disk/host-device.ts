// The disk VM's back end as a device of the disk VM's worker: it learns
// the blkback helper's window from the control line, takes requests from
// the block channel and sends the replies back on it.
import type { ChannelEndpoint } from "../../bridge/channel.js";
import { decodeBlockRequest, encodeBlockResponse } from "../../bridge/block-link.js";
import type { BackendResponse } from "../../bridge/virtio-blk/device.js";
import type { DeviceContext, HostDevice } from "../../hypervisor/vm/host-device.js";
import { BlockBackEnd } from "./backend.js";
import { DOORBELL_PORT, WINDOW } from "./guest-ring.js";
import type { ImageFile } from "./image-file.js";
import { windowLines } from "../window.js";

export function diskBackEndDevice(ctx: DeviceContext, image: ImageFile): HostDevice {
  let endpoint: ChannelEndpoint | undefined;
  // Replies that found the channel full wait here, in order, with their own copy of the data.
  const outbox: BackendResponse[] = [];
  let retry: NodeJS.Timeout | undefined;
  const flushOutbox = () => {
    retry = undefined;
    while (outbox.length > 0 && endpoint?.send(encodeBlockResponse(outbox[0]))) outbox.shift();
    if (outbox.length > 0 && endpoint) retry = setTimeout(flushOutbox, 1);
  };
  const backEnd = new BlockBackEnd(
    ctx.machine,
    image,
    () => ctx.kick(),
    (resp, dataParts) => {
      // Straight from the guest's window into the ring when the channel has room.
      if (outbox.length === 0 && endpoint?.send(encodeBlockResponse(resp, dataParts))) return;
      if (dataParts) resp.data = Buffer.concat(dataParts);
      outbox.push(resp);
      if (!retry) flushOutbox();
    },
    (detail) => ctx.violation(`blkback: ${detail}`),
  );
  // blkback rings when it has replied, and then looks at the ring again
  // before it sleeps: requests that wait on the channel go in now rather
  // than at the end of the slice of guest time (up to 1 ms later).
  ctx.machine.claimDoorbellPort(DOORBELL_PORT, () => {
    backEnd.onKick();
    endpoint?.poll();
  });
  return {
    name: "disk",
    service: "block",
    onControlLine: windowLines(
      ctx.machine,
      WINDOW.PAGES,
      (window) => {
        backEnd.attachWindow(window);
        ctx.ready();
      },
      (detail) => ctx.violation(`blkback window: ${detail}`),
    ),
    onKick: () => backEnd.onKick(),
    attachChannel(channel) {
      endpoint?.close();
      const ep = ctx.openChannel(channel);
      endpoint = ep;
      outbox.length = 0;
      // Borrowed: a write's data goes from the ring straight into the guest's window.
      ep.onMessage(
        (msg) => {
          const req = decodeBlockRequest(msg);
          if ("code" in req) ctx.peerViolation("block", `app VM front end sent a malformed request: ${req.code}: ${req.detail}`);
          else backEnd.submit(req, true);
        },
        { borrow: true },
      );
    },
    detachChannel() {
      endpoint?.close();
      endpoint = undefined;
    },
    // After a restore the worker is new: ask the helper to register its window again.
    afterRestore: () => ctx.sendControl("BH1 window"),
    spinMs: () => backEnd.metrics.lookMs,
    status: () => ({ image: image.path, sizeBytes: image.sizeBytes, ready: backEnd.ready, ...backEnd.metrics, fsyncs: image.fsyncs }),
  };
}
