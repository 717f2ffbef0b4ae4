// The cable between a machine's NE2000 and the wire (drivervm/net/wire.ts):
// a Unix socket to the wire process, carrying each frame behind a 4-byte
// big-endian length (QEMU's stream format). The wire outlives the machine;
// this end is re-plugged by the machine's next worker.
//
// v86's NE2000 drops frames silently when its 16-page receive ring is full,
// so frames from the wire wait here until the NIC has room. When enough
// wait, this end stops reading the socket and the rest wait in the wire's
// socket buffer (16 MiB), as a switch holds frames for a busy port: a TCP
// connection can have more in flight than our backlog holds.
import { connect, type Socket } from "node:net";
import { frameProblem } from "../../bridge/frame-message.js";
import type { Nic } from "../../hypervisor/v86/adapter.js";
import type { HostDevice } from "../../hypervisor/vm/host-device.js";
import { NetMetrics } from "../../bridge/virtio-net/metrics.js";

/** Frames waiting here beyond which the socket is no longer read. */
const BACKLOG_PAUSE = 256;
/** A bound that holds even if a frame stream outruns the pause (a chunk read before it). */
const BACKLOG_MAX = 1024;
const RECONNECT_MS = 200;
/**
 * Frames wait for room in the NIC's receive ring; the guest's boundary
 * write delivers the next ones at once. This timer is only a fallback (a
 * stopped NIC, for one).
 */
const PACE_MS = 2;

export type WireDrop = "no-wire" | "nic-full" | "from-wire-malformed" | "from-nic-malformed";

export function wireLinkDevice(nic: Nic, socketPath: string, log: (line: string) => void): HostDevice {
  /** Out: frames the NIC sent onto the wire. In: frames the wire gave the NIC. */
  const metrics = new NetMetrics();
  const drops: Partial<Record<WireDrop, number>> = {};
  const drop = (reason: WireDrop) => (drops[reason] = (drops[reason] ?? 0) + 1);
  const backlog: Uint8Array[] = [];
  let socket: Socket | undefined;
  let connected = false;
  let stopped = false;
  let pending: Buffer = Buffer.alloc(0);
  let paused = false;
  let pacer: NodeJS.Timeout | undefined;
  let connects = 0;
  let roomEvents = 0;
  let nudges = 0;

  const deliver = () => {
    clearTimeout(pacer);
    pacer = undefined;
    while (backlog.length > 0 && nic.canReceive(backlog[0].length)) {
      const frame = backlog.shift()!;
      nic.receive(frame);
      metrics.received(frame.length);
    }
    if (paused && backlog.length < BACKLOG_PAUSE / 2) {
      paused = false;
      socket?.resume();
    }
    if (backlog.length > 0) {
      const seen = roomEvents;
      pacer = setTimeout(() => {
        // No room freed in a whole period: the guest may have lost the interrupt for what waits.
        if (roomEvents === seen) (nudges++, nic.nudge());
        deliver();
      }, PACE_MS);
    }
  };

  const onData = (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4) {
      const length = pending.readUInt32BE(0);
      if (length > 65535) {
        // The wire is our own process: a broken stream is a bug there. Start over.
        log(`wire stream broken (length ${length}); reconnecting`);
        socket?.destroy();
        return;
      }
      if (pending.length < 4 + length) break;
      const frame = new Uint8Array(pending.subarray(4, 4 + length));
      pending = pending.subarray(4 + length);
      if (frameProblem(length)) drop("from-wire-malformed");
      else if (backlog.length >= BACKLOG_MAX) drop("nic-full");
      else backlog.push(frame);
    }
    if (backlog.length >= BACKLOG_PAUSE && !paused) {
      paused = true;
      socket?.pause();
    }
    if (backlog.length > 0 && !pacer) deliver();
  };

  const plug = () => {
    if (stopped) return;
    const s = connect(socketPath);
    socket = s;
    pending = Buffer.alloc(0);
    paused = false;
    s.setNoDelay?.(true);
    s.on("connect", () => {
      connected = true;
      connects++;
    });
    s.on("data", onData);
    s.on("error", () => {});
    s.on("close", () => {
      connected = false;
      if (socket === s && !stopped) setTimeout(plug, RECONNECT_MS);
    });
  };

  nic.onRoom(() => {
    roomEvents++;
    if (backlog.length > 0) deliver();
  });
  nic.onTransmit((frame) => {
    if (frameProblem(frame.length)) return drop("from-nic-malformed");
    if (!connected || !socket) return drop("no-wire");
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(frame.length, 0);
    socket.write(Buffer.concat([head, frame]));
    metrics.sent(frame.length);
  });

  return {
    name: "wire",
    // Plugged in only when the machine runs: a spare worker waiting to be
    // restored must not take the wire from the machine that is using it.
    onRun: plug,
    status: () => ({ socket: socketPath, connected, connects, ...metrics.snapshot(), drops: { ...drops }, backlog: backlog.length, nudges }),
    // The cable is not part of a snapshot: frames waiting for the NIC are dropped with the old machine.
    setState: () => {
      backlog.length = 0;
    },
  };
}
