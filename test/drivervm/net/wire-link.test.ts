// The NE2000's cable: frames from the wire wait for room in the NIC, and a
// long burst waits in the socket instead of being dropped.
import { afterEach, describe, expect, it } from "vitest";
import { createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { wireLinkDevice } from "../../../drivervm/net/wire-link.js";
import type { Nic } from "../../../hypervisor/v86/adapter.js";
import { until } from "./waiting.js";

/** A NIC whose receive ring takes frames only while `open`. */
class FakeNic implements Nic {
  open = false;
  received: Uint8Array[] = [];
  private room: () => void = () => {};
  onTransmit(): void {}
  canReceive(): boolean {
    return this.open;
  }
  onRoom(listener: () => void): void {
    this.room = listener;
  }
  nudge(): void {}
  receive(frame: Uint8Array): void {
    this.received.push(frame);
  }
  /** The guest emptied its ring. */
  freeRoom(): void {
    this.room();
  }
}

/** An Ethernet-sized frame carrying its number, behind its 4-byte length. */
function framed(n: number): Buffer {
  const out = Buffer.alloc(4 + 1514);
  out.writeUInt32BE(1514, 0);
  out.writeUInt32BE(n, 4 + 14);
  return out;
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  while (cleanup.length) cleanup.pop()!();
});

async function wire(): Promise<{ path: string; peer: Promise<Socket> }> {
  const dir = mkdtempSync(join(tmpdir(), "bh-link-"));
  const path = join(dir, "wire.sock");
  let server: Server;
  const peer = new Promise<Socket>((resolve) => (server = createServer(resolve)));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanup.push(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, peer };
}

describe("the NE2000's cable to the wire", () => {
  it("holds a burst longer than its backlog in the socket, and delivers every frame in order once the NIC has room", async () => {
    const w = await wire();
    const nic = new FakeNic();
    const link = wireLinkDevice(nic, w.path, () => {});
    link.onRun!();
    cleanup.push(() => link.setState!(undefined));
    const socket = await w.peer;
    cleanup.push(() => socket.destroy());
    const total = 3000; // 4.5 MB: three times what the backlog may ever hold
    for (let n = 0; n < total; n++) socket.write(framed(n));
    // The NIC is full: frames pile up here until the link stops reading.
    const status = () => link.status!() as { backlog: number; drops: Record<string, number> };
    await until("the backlog to fill", () => status().backlog >= 256);
    await new Promise((r) => setTimeout(r, 200));
    expect(status().backlog).toBeLessThan(1024);
    nic.open = true;
    nic.freeRoom();
    await until("every frame", () => nic.received.length === total, 5000);
    expect(status().drops).toEqual({});
    expect(nic.received.map((f) => Buffer.from(f).readUInt32BE(14))).toEqual([...Array(total).keys()]);
  });
});
