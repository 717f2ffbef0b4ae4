// The net VM's back end as a device of the net VM's worker: it learns
// netback's window from the control line, takes the app VM's frames from
// the net channel and sends netback's frames back on it.
import type { ChannelEndpoint } from "../../bridge/channel.js";
import { encodeFrame, frameHandler } from "../../bridge/frame-message.js";
import type { DeviceContext, HostDevice } from "../../hypervisor/vm/host-device.js";
import { windowLines } from "../window.js";
import { NetBackEnd } from "./backend.js";
import { NET_DOORBELL_PORT, NET_RING } from "./frame-ring.js";

export function netBackEndDevice(ctx: DeviceContext): HostDevice {
  let endpoint: ChannelEndpoint | undefined;
  const channelDrops = { "link-down": 0, "from-peer-malformed": 0 };
  let waitingForRoom = false;
  const backEnd = new NetBackEnd(
    ctx.machine,
    () => ctx.kick(),
    (frame) => {
      if (!endpoint) {
        channelDrops["link-down"]++;
        return true;
      }
      const message = encodeFrame(frame);
      if (endpoint.send(message)) return true;
      // The app VM's side is behind: the frame waits in ring B, and the rest in netback's receive ring.
      if (!waitingForRoom) {
        waitingForRoom = true;
        const waitedOn = endpoint;
        const resume = (room: boolean) => {
          if (endpoint !== waitedOn) return; // replaced: attachChannel has taken over
          waitingForRoom = false;
          // A macrotask, not a microtask: a channel that says it has room but refuses the
          // write (a corrupt ring) must not spin this worker without letting it breathe.
          if (room) setImmediate(() => backEnd.onDoorbell());
        };
        waitedOn.whenWritable(message.reduce((n, part) => n + part.byteLength, 0)).then(resume, () => resume(false));
      }
      return false;
    },
    (detail) => ctx.violation(`netback: ${detail}`),
  );
  // netback rings when it has passed frames on, and looks at its ring again
  // before it sleeps: frames from the app VM that wait on the channel go in
  // now rather than at the end of the slice of guest time.
  ctx.machine.claimDoorbellPort(NET_DOORBELL_PORT, () => {
    backEnd.onDoorbell();
    endpoint?.poll();
  });
  return {
    name: "net",
    service: "net",
    onControlLine: windowLines(
      ctx.machine,
      NET_RING.WINDOW_PAGES,
      (window) => {
        backEnd.attachWindow(window);
        ctx.ready();
      },
      (detail) => ctx.violation(`netback window: ${detail}`),
    ),
    onKick: () => backEnd.onDoorbell(),
    attachChannel(channel) {
      endpoint?.close();
      const ep = ctx.openChannel(channel);
      endpoint = ep;
      waitingForRoom = false;
      // Borrowed: a frame goes from the ring straight into netback's ring A (the backlog keeps a copy).
      ep.onMessage(
        frameHandler(
          (frame) => backEnd.send(frame),
          (bad, n) => {
            channelDrops["from-peer-malformed"]++;
            if (n % 100 === 1) ctx.peerViolation("net", `app VM front end sent a malformed frame message: ${bad.code}: ${bad.detail}`);
          },
        ),
        { borrow: true },
      );
      // Frames that waited in ring B for a full channel go to the new one.
      backEnd.onDoorbell();
    },
    detachChannel() {
      endpoint?.close();
      endpoint = undefined;
      waitingForRoom = false;
      // Frames that waited in ring B for the old channel are dropped (link-down), so netback reads on.
      backEnd.onDoorbell();
    },
    // After a restore the worker is new: ask netback to register its window again.
    afterRestore: () => ctx.sendControl("BH1 window"),
    status: () => {
      const s = backEnd.status();
      return { ...s, drops: { ...(s.drops as object), ...Object.fromEntries(Object.entries(channelDrops).filter(([, n]) => n > 0)) } };
    },
  };
}
