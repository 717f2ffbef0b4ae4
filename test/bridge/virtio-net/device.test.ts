// The app VM's virtio-net front end against a fake virtio device: what the
// guest sends is checked and counted, what arrives waits for the guest's
// receive buffers, and a link that goes away holds frames, bounded.
import { describe, expect, it } from "vitest";
import { VirtioNetFrontEnd } from "../../../dist/bridge/virtio-net/device.js";
import type { VirtioDevice, VirtioRequest } from "../../../dist/hypervisor/v86/adapter.js";
import { FakeRequest } from "../fake-virtio.js";

/** A virtio-net buffer: all of its writable bytes take the frame (no status byte). */
class Req extends FakeRequest {
  constructor(bytes: Uint8Array, writable: number, fault: string | null = null) {
    super(bytes, writable, fault, false);
  }
}

class Device implements VirtioDevice {
  readonly queues: Req[][] = [[], []];
  readonly completed: Array<[number, Req]> = [];
  pop(q: number): VirtioRequest | undefined {
    return this.queues[q].shift();
  }
  complete(q: number, r: VirtioRequest): void {
    this.completed.push([q, r as Req]);
  }
  queueReady(): boolean {
    return true;
  }
  getState(): unknown {
    return [];
  }
  setState(): void {}
}

const RX = 0;
const TX = 1;
/** A frame as the guest sends it: 12-byte virtio-net header, then the frame. */
const tx = (frameBytes: number, fault: string | null = null) => new Req(new Uint8Array(12 + frameBytes).fill(7), 0, fault);

function setup() {
  const device = new Device();
  const violations: string[] = [];
  const fe = new VirtioNetFrontEnd((d) => violations.push(d));
  fe.bind(device);
  const sent: Uint8Array[] = [];
  return { device, fe, violations, sent };
}

describe("VirtioNetFrontEnd (app VM side)", () => {
  it("sends the guest's frames without their header, and drops runt, oversized and unreadable ones, counted", () => {
    const { device, fe, violations, sent } = setup();
    fe.attach({ send: (f) => (sent.push(f.slice()), true) });
    device.queues[TX].push(tx(60), tx(10), tx(1515), tx(100, "buffer 0x9000000+100 outside guest memory"), tx(1514));
    fe.onNotify(TX);
    expect(sent.map((f) => f.length)).toEqual([60, 1514]);
    expect(fe.status()).toMatchObject({ framesOut: 2, drops: { "from-guest-malformed": 3 } });
    expect(violations).toHaveLength(3);
    expect(device.completed.filter(([q]) => q === TX)).toHaveLength(5); // every buffer goes back to the guest
  });

  it("holds frames while the link is down and sends them when it comes back; counts what overflows", () => {
    const { device, fe, sent } = setup();
    for (let i = 0; i < 300; i++) device.queues[TX].push(tx(60));
    fe.onNotify(TX);
    expect(fe.status()).toMatchObject({ held: 256, drops: { "link-down": 44 } });
    fe.attach({ send: (f) => (sent.push(f), true) });
    expect(sent).toHaveLength(256);
    expect(fe.status()).toMatchObject({ held: 0, framesOut: 256 });
  });

  it("puts received frames into posted buffers behind a 12-byte header, and keeps them until buffers come", () => {
    const { device, fe } = setup();
    fe.receive(new Uint8Array(100).fill(1));
    expect(fe.status().backlog).toBe(1);
    const buf = new Req(new Uint8Array(0), 1526);
    device.queues[RX].push(buf);
    fe.onNotify(RX);
    expect(buf.written).toHaveLength(112);
    expect(buf.written[10]).toBe(1); // num_buffers
    expect(buf.written.slice(12).every((b) => b === 1)).toBe(true);
    expect(fe.status()).toMatchObject({ backlog: 0, framesIn: 1 });
  });

  it("drops a frame for a receive buffer that is too small, and counts it", () => {
    const { device, fe, violations } = setup();
    device.queues[RX].push(new Req(new Uint8Array(0), 50));
    fe.receive(new Uint8Array(100));
    expect(fe.status().drops).toMatchObject({ "guest-buffer-bad": 1 });
    expect(violations[0]).toMatch(/unusable receive buffer/);
  });
});
