import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChannelEndpoint,
  ChannelError,
  createChannel,
  revokeChannel,
  type ChannelDescriptor,
  type ChannelStats,
} from "../../dist/bridge/channel.js";
import { RING_HEADER_BYTES, Ring, RingError } from "../../dist/bridge/ring.js";

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const tick = (ms = 0): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await tick(1);
  }
}

const endpoints: ChannelEndpoint[] = [];
function open(d: ChannelDescriptor): ChannelEndpoint {
  const ep = new ChannelEndpoint(d);
  endpoints.push(ep);
  return ep;
}
afterEach(() => {
  for (const ep of endpoints.splice(0)) ep.close();
});

describe("ChannelEndpoint in one thread", () => {
  it("carries messages both ways and counts them", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const ea = open(a);
    const eb = open(b);
    const atA: Uint8Array[] = [];
    const atB: Uint8Array[] = [];
    ea.onMessage((m) => atA.push(m));
    eb.onMessage((m) => atB.push(m));
    expect(ea.send([bytes(1, 2), bytes(3)])).toBe(true);
    expect(eb.send([bytes(9)])).toBe(true);
    expect(ea.send([bytes(4)])).toBe(true);
    await until(() => atB.length === 2 && atA.length === 1);
    expect(atB).toEqual([bytes(1, 2, 3), bytes(4)]);
    expect(atA).toEqual([bytes(9)]);
    expect(ea.stats).toMatchObject({ messagesSent: 2, bytesSent: 4, messagesReceived: 1, bytesReceived: 1 });
    expect(eb.stats).toMatchObject({ messagesSent: 1, bytesSent: 1, messagesReceived: 2, bytesReceived: 4 });
  });

  it("does not call the handler from inside onMessage", () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    open(a).send([bytes(1)]);
    let calls = 0;
    open(b).onMessage(() => calls++);
    expect(calls).toBe(0);
  });

  it("refuses a send when the peer's ring is full, and says when there is room again", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 64 });
    const ea = open(a);
    const eb = open(b);
    expect(ea.maxMessageBytes).toBe(28);
    expect(ea.send([new Uint8Array(28)])).toBe(true);
    expect(ea.send([new Uint8Array(28)])).toBe(true);
    expect(ea.send([new Uint8Array(28)])).toBe(false);
    expect(ea.stats.fullRefusals).toBe(1);
    let writable = false;
    const waiting = ea.whenWritable(28).then((ok) => (writable = ok));
    await tick(10);
    expect(writable).toBe(false);
    const got: Uint8Array[] = [];
    eb.onMessage((m) => got.push(m));
    await waiting;
    expect(writable).toBe(true);
    expect(ea.send([new Uint8Array(28)])).toBe(true);
    await until(() => got.length === 3);
  });

  it("ends a wait for room when the endpoint is closed", async () => {
    const { a } = createChannel({ bytesPerDirection: 64 });
    const ea = open(a);
    ea.send([new Uint8Array(28)]);
    ea.send([new Uint8Array(28)]);
    const waiting = ea.whenWritable(28);
    ea.close();
    expect(await waiting).toBe(false);
  });

  it("throws a RingError for a message above the channel's limit", () => {
    const { a } = createChannel({ bytesPerDirection: 64 });
    const e = (() => {
      try {
        open(a).send([new Uint8Array(29)]);
      } catch (err) {
        return err;
      }
    })();
    expect(e).toBeInstanceOf(RingError);
    expect((e as RingError).code).toBe("too-large");
  });

  it("keeps receiving after a handler throws, and reports the error", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const ea = open(a);
    const eb = open(b);
    const errors: ChannelError[] = [];
    const got: number[] = [];
    eb.onError((e) => errors.push(e));
    eb.onMessage((m) => {
      if (m[0] === 2) throw new Error("handler bug");
      got.push(m[0]);
    });
    for (const n of [1, 2, 3]) ea.send([bytes(n)]);
    await until(() => got.length === 2);
    expect(got).toEqual([1, 3]);
    expect(errors).toHaveLength(1);
    expect(errors[0].code).toBe("handler");
    expect(eb.stats.handlerErrors).toBe(1);
    ea.send([bytes(4)]);
    await until(() => got.length === 3);
  });

  it("stops the receive loop on close", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const ea = open(a);
    const eb = open(b);
    const got: Uint8Array[] = [];
    eb.onMessage((m) => got.push(m));
    eb.close();
    expect(await eb.stopped).toBe("closed");
    ea.send([bytes(1)]);
    await tick(20);
    expect(got).toHaveLength(0);
    expect(eb.send([bytes(1)])).toBe(false);
  });

  it("after revocation refuses sends, drops what is unread and ends both loops", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const ea = open(a);
    const eb = open(b);
    ea.onMessage(() => {});
    ea.send([bytes(1)]);
    ea.send([bytes(2)]);
    // Never read: b's loop has not started when the channel is revoked.
    revokeChannel(a);
    expect(ea.revoked && eb.revoked).toBe(true);
    expect(ea.send([bytes(3)])).toBe(false);
    expect(eb.send([bytes(3)])).toBe(false);
    expect(ea.stats.refusedAfterRevoke).toBe(1);
    expect(eb.stats.refusedAfterRevoke).toBe(1);
    expect(await ea.stopped).toBe("revoked");
    const got: Uint8Array[] = [];
    eb.onMessage((m) => got.push(m));
    expect(await eb.stopped).toBe("revoked");
    expect(got).toHaveLength(0);
    expect(await ea.whenWritable(1)).toBe(false);
  });

  it("reports a corrupt ring and stops receiving instead of throwing", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 64 });
    const ea = open(a);
    const eb = open(b);
    const errors: ChannelError[] = [];
    eb.onError((e) => errors.push(e));
    ea.send([bytes(1)]);
    new Uint32Array(a.tx, RING_HEADER_BYTES)[0] = 1000;
    eb.onMessage(() => {});
    expect(await eb.stopped).toBe("corrupt");
    expect(errors.map((e) => e.code)).toEqual(["corrupt"]);
    expect(eb.lastError?.cause).toBeInstanceOf(RingError);
  });

  it("refuses a descriptor that is malformed or names rings of another generation", () => {
    const { a } = createChannel({ bytesPerDirection: 64, generation: 7 });
    const other = createChannel({ bytesPerDirection: 64, generation: 8 });
    const bad: unknown[] = [
      null,
      {},
      { ...a, version: 2 },
      { ...a, side: "c" },
      { ...a, tx: new ArrayBuffer(8) },
      { ...a, rx: a.tx },
      { ...a, rx: other.a.rx },
    ];
    for (const d of bad) {
      expect(() => new ChannelEndpoint(d as ChannelDescriptor)).toThrow(ChannelError);
    }
    expect(new ChannelEndpoint(a).generation).toBe(7);
  });

  it("lends each message to a borrowing handler as a view, in order", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const got: number[][] = [];
    open(b).onMessage((m) => got.push([m.buffer instanceof SharedArrayBuffer ? 1 : 0, ...m]), { borrow: true });
    const ea = open(a);
    ea.send([bytes(1, 2)]);
    ea.send([bytes(3)]);
    await until(() => got.length === 2);
    expect(got).toEqual([[1, 1, 2], [1, 3]]);
  });

  it("lets an awake reader poll: the writer skips the wake-up, poll() and going to sleep deliver", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const eb = open(b);
    const got: Uint8Array[] = [];
    eb.onMessage((m) => got.push(m));
    await tick(5); // the receive loop now sleeps on the doorbell
    eb.setAwake(true);
    const ea = open(a);
    ea.send([bytes(1)]);
    await tick(20);
    expect(got).toEqual([]); // nobody woke the loop: the owner promised to poll
    eb.poll();
    expect(got).toEqual([bytes(1)]);
    ea.send([bytes(2)]);
    eb.setAwake(false); // going to sleep looks once more
    expect(got).toEqual([bytes(1), bytes(2)]);
    ea.send([bytes(3)]); // asleep: the doorbell wakes the loop as before
    await until(() => got.length === 3);
    expect(got[2]).toEqual(bytes(3));
  });

  it("gives each new channel its own generation", () => {
    const first = createChannel({ bytesPerDirection: 64 });
    const second = createChannel({ bytesPerDirection: 64 });
    expect(second.a.generation).not.toBe(first.a.generation);
    expect(first.b.generation).toBe(first.a.generation);
    expect(new Ring(first.a.tx).generation).toBe(first.a.generation);
  });
});

// Workers run the fixture against the compiled bridge in dist/.
const fixture = new URL("./fixtures/channel-peer.mjs", import.meta.url);

interface Report {
  progress?: number;
  received: number;
  bytes: number;
  fullWaits: number;
  reason: string;
  stats: ChannelStats;
  errors: string[];
  sent: number;
  after: boolean[];
  atReport: number;
}

function spawn(workerData: Record<string, unknown>): { worker: Worker; reports: Report[]; next: () => Promise<Report> } {
  const worker = new Worker(fixture, { workerData });
  const reports: Report[] = [];
  let failure: Error | undefined;
  worker.on("message", (r: Report) => reports.push(r));
  worker.on("error", (e) => (failure = e));
  const next = async (): Promise<Report> => {
    await until(() => failure !== undefined || reports.some((r) => r.progress === undefined), 60_000);
    if (failure) throw failure;
    const i = reports.findIndex((r) => r.progress === undefined);
    return reports.splice(i, 1)[0];
  };
  return { worker, reports, next };
}

describe("ChannelEndpoint between two worker threads", () => {
  it("exchanges 10,000 messages of random sizes each way, in order and intact", async () => {
    const count = 10_000;
    const { a, b } = createChannel({ bytesPerDirection: 128 * 1024 });
    const pa = spawn({ descriptor: a, mode: "exchange", seed: 1, count, maxSize: 65_000 });
    const pb = spawn({ descriptor: b, mode: "exchange", seed: 2, count, maxSize: 65_000 });
    try {
      const [ra, rb] = await Promise.all([pa.next(), pb.next()]);
      for (const r of [ra, rb]) {
        expect(r.errors).toEqual([]);
        expect(r.received).toBe(count);
        expect(r.reason).toBe("closed");
        expect(r.stats.messagesSent).toBe(count);
        expect(r.stats.messagesReceived).toBe(count);
        expect(r.stats.handlerErrors).toBe(0);
      }
      expect(ra.stats.bytesSent).toBe(rb.stats.bytesReceived);
      expect(rb.stats.bytesSent).toBe(ra.stats.bytesReceived);
      // Large messages fill a 128 KiB ring: the back-pressure path ran too.
      expect(ra.fullWaits + rb.fullWaits).toBeGreaterThan(0);
    } finally {
      await Promise.all([pa.worker.terminate(), pb.worker.terminate()]);
    }
  });

  it("after revokeChannel delivers nothing more and refuses every send", async () => {
    const { a, b } = createChannel({ bytesPerDirection: 64 * 1024 });
    const sender = spawn({ descriptor: a, mode: "flood", seed: 3, maxSize: 2000 });
    const receiver = spawn({ descriptor: b, mode: "stalled-reader", count: 100 });
    try {
      await until(() => receiver.reports.some((r) => r.progress === 100), 60_000);
      // The receiver hangs; wait until the sender has filled the ring behind it.
      const ring = new Ring(a.tx);
      let unread = -1;
      while (unread < 32 * 1024 || unread !== ring.bytesUnread()) {
        unread = ring.bytesUnread();
        await tick(20);
      }
      revokeChannel(a);
      sender.worker.postMessage("report");
      receiver.worker.postMessage("report");
      const [s, r] = await Promise.all([sender.next(), receiver.next()]);
      expect(s.after).toEqual(Array(10).fill(false));
      expect(s.stats.refusedAfterRevoke).toBeGreaterThanOrEqual(10);
      expect(s.stats.fullRefusals).toBeGreaterThan(0);
      expect(r.reason).toBe("revoked");
      // Nothing after the hundredth message, though the ring was full of them.
      expect(r.received).toBe(100);
      expect(r.atReport).toBe(100);
      expect(s.sent).toBeGreaterThan(100);
      expect(ring.bytesUnread()).toBeGreaterThan(0);
      expect(r.errors).toEqual([]);
    } finally {
      await Promise.all([sender.worker.terminate(), receiver.worker.terminate()]);
    }
  });
});
