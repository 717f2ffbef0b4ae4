// The app VM's virtio-net front end against a fake virtio device: what the
// guest sends is checked and counted, what arrives waits for the guest's
// receive buffers, and a link that goes away holds frames, bounded.
import { describe, expect, it } from "vitest";
import { VirtioNetFrontEnd } from "../../../dist/bridge/virtio-net/device.js";
import { MAX_SEGMENTS } from "../../../dist/bridge/virtio-net/coalesce.js";
import type { VirtioDevice, VirtioRequest } from "../../../dist/hypervisor/v86/adapter.js";
import { FakeRequest } from "../fake-virtio.js";
import { bytes, concat, segment } from "./segments.js";

/** A virtio-net buffer: all of its writable bytes take the frame (no status byte). */
class Req extends FakeRequest {
  constructor(bytes: Uint8Array, writable: number, fault: string | null = null) {
    super(bytes, writable, fault, false);
  }
}

class Device implements VirtioDevice {
  readonly queues: Req[][] = [[], []];
  readonly completed: Array<[number, Req]> = [];
  /** Feature bits the guest accepted (the tests pick). */
  readonly features = new Set<number>();
  readonly completions: number[] = [];
  private readonly popped: Req[][] = [[], []];
  pop(q: number): VirtioRequest | undefined {
    const r = this.queues[q].shift();
    if (r) this.popped[q].push(r);
    return r;
  }
  giveBack(q: number, count: number): void {
    if (count > 0) this.queues[q].unshift(...this.popped[q].splice(-count));
  }
  complete(q: number, r: VirtioRequest): void {
    this.completeAll(q, [r]);
  }
  completeAll(q: number, rs: readonly VirtioRequest[]): void {
    for (const r of rs) this.completed.push([q, r as Req]);
    this.completions.push(rs.length);
  }
  accepted(feature: number): boolean {
    return this.features.has(feature);
  }
  /** The receive queue's size as the guest set it. */
  rxQueueSize = 256;
  queueSize(q: number): number {
    return q === RX ? this.rxQueueSize : 256;
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

  describe("with the receive offloads accepted (GUEST_CSUM, GUEST_TSO4, MRG_RXBUF)", () => {
    const offloads = () => {
      const t = setup();
      for (const f of [1, 7, 15]) t.device.features.add(f);
      return t;
    };
    const rxBufs = (device: Device, n: number, size = 1526) => {
      const bufs = Array.from({ length: n }, () => new Req(new Uint8Array(0), size));
      device.queues[RX].push(...bufs);
      return bufs;
    };
    const parts = [0, 1, 2, 3, 4].map((i) => bytes(1460, 30 + i));
    const frames = parts.map((p, i) => segment({ seq: 9000 + 1460 * i, payload: p }));

    it("hands a batch of segments to the guest as one GSO packet over as many buffers as it needs, with one interrupt", () => {
      const { device, fe } = offloads();
      const bufs = rxBufs(device, 8);
      for (const f of frames) fe.receive(f);
      expect(device.completed).toHaveLength(0); // held until the batch ends
      fe.endOfBatch();
      const total = 12 + 54 + 5 * 1460;
      const used = Math.ceil(total / 1526);
      expect(device.completions).toEqual([used]);
      const written = Uint8Array.from(bufs.slice(0, used).flatMap((b) => b.written));
      expect(written.length).toBe(total);
      expect([...written.subarray(0, 12)]).toEqual([2, 1, 54, 0, 1460 & 0xff, 1460 >> 8, 0, 0, 0, 0, used, 0]);
      expect(written.subarray(12 + 54)).toEqual(concat(parts));
      expect(device.queues[RX]).toHaveLength(8 - used);
      expect(fe.status()).toMatchObject({ framesIn: 1, coalesced: { frames: 1, segments: 5 } });
    });

    it("keeps a packet, and gives its buffers back, until the guest has posted enough", () => {
      const { device, fe } = offloads();
      rxBufs(device, 2);
      for (const f of frames) fe.receive(f);
      fe.endOfBatch();
      expect(device.completed).toHaveLength(0);
      expect(device.queues[RX]).toHaveLength(2); // given back, not lost
      expect(fe.status().backlog).toBe(1);
      rxBufs(device, 4);
      fe.onNotify(RX);
      expect(device.completions).toEqual([5]);
      expect(fe.status()).toMatchObject({ backlog: 0, framesIn: 1 });
    });

    it("marks a lone checked segment DATA_VALID without GSO, and anything else neither", () => {
      const { device, fe } = offloads();
      const bufs = rxBufs(device, 2);
      fe.receive(frames[0]!);
      fe.receive(new Uint8Array(60).fill(9)); // not TCP: passes through as it is
      fe.endOfBatch();
      expect(bufs.map((b) => [...b.written.slice(0, 12)])).toEqual([
        [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
      ]);
      expect(bufs[1]!.written.slice(12)).toEqual([...new Uint8Array(60).fill(9)]);
    });

    it("bounds the bytes it keeps for the guest, not only the frames: merged segments are large", () => {
      const { fe } = offloads();
      const seg = bytes(1460, 77);
      // Full merged segments of MAX_SEGMENTS each: 300 of them would pass the 512-frame bound.
      for (let batch = 0; batch < 300; batch++) {
        for (let i = 0; i < MAX_SEGMENTS; i++) fe.receive(segment({ seq: (batch * MAX_SEGMENTS + i) * 1460, payload: seg }));
        fe.endOfBatch();
      }
      const st = fe.status();
      expect(st.backlog).toBeLessThanOrEqual(Math.floor((4 << 20) / (54 + MAX_SEGMENTS * 1460)));
      expect(st.backlog).toBeGreaterThan(150);
      expect(st.drops["no-guest-buffer"]).toBe(300 - st.backlog);
    });

    it("drops, uncounted as a violation, a merged packet kept across a driver reset that took the offloads away", () => {
      const { device, fe, violations } = offloads();
      for (const f of frames) fe.receive(f);
      fe.endOfBatch(); // no buffers yet: it waits, merged
      device.features.clear(); // the driver reset and chose no offloads
      rxBufs(device, 2);
      fe.onNotify(RX);
      expect(fe.status()).toMatchObject({ backlog: 0, drops: { "offload-withdrawn": 1 } });
      expect(violations).toEqual([]);
      expect(device.completed).toHaveLength(0); // the buffers stay the guest's
    });

    it("refuses a packet that the guest's whole receive queue could not hold, instead of waiting forever", () => {
      const { device, fe, violations } = offloads();
      device.rxQueueSize = 2;
      rxBufs(device, 2);
      for (const f of frames) fe.receive(f);
      fe.endOfBatch();
      expect(fe.status().drops).toMatchObject({ "guest-buffer-bad": 1 });
      expect(violations[0]).toMatch(/unusable receive buffer/);
      expect(fe.status().backlog).toBe(0);
    });

    it("without MRG_RXBUF, never spreads a frame: one buffer each, merged or not", () => {
      const { device, fe } = setup();
      for (const f of [1, 7]) device.features.add(f);
      const bufs = rxBufs(device, 5);
      for (const f of frames) fe.receive(f);
      fe.endOfBatch();
      expect(device.completions).toEqual([1, 1, 1, 1, 1]);
      expect(bufs.every((b) => b.written.length === 12 + 54 + 1460 && b.written[0] === 0)).toBe(true);
    });
  });

  it("drops a frame for a receive buffer that is too small, and counts it", () => {
    const { device, fe, violations } = setup();
    device.queues[RX].push(new Req(new Uint8Array(0), 50));
    fe.receive(new Uint8Array(100));
    expect(fe.status().drops).toMatchObject({ "guest-buffer-bad": 1 });
    expect(violations[0]).toMatch(/unusable receive buffer/);
  });
});
