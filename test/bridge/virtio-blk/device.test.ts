import { describe, expect, it } from "vitest";
import { VirtioBlkFrontEnd, type BackendRequest } from "../../../dist/bridge/virtio-blk/device.js";
import { VIRTIO_BLK_S, VIRTIO_BLK_T } from "../../../dist/bridge/virtio-blk/request.js";
import { FakeDevice, blkRequest } from "./fake.js";

function setup() {
  const device = new FakeDevice();
  const violations: string[] = [];
  const fe = new VirtioBlkFrontEnd(2048, (kind, detail) => violations.push(`${kind}: ${detail}`));
  fe.bind(device);
  const sent: BackendRequest[] = [];
  let up = true;
  fe.attach({ send: (r) => (up ? (sent.push(r), true) : false) });
  return { device, fe, sent, violations, setUp: (v: boolean) => (up = v) };
}

describe("VirtioBlkFrontEnd", () => {
  it("forwards a read and hands the reply's data and status to the guest", () => {
    const { device, fe, sent } = setup();
    const req = blkRequest(VIRTIO_BLK_T.IN, 4, { readLength: 1024 });
    device.queue.push(req);
    fe.onNotify();
    expect(sent).toEqual([{ id: 1, op: "read", sector: 4, length: 1024, data: undefined }]);
    fe.onResponse({ id: 1, op: "read", ok: true, length: 1024, data: new Uint8Array(1024).fill(9) });
    expect(req.status).toBe(VIRTIO_BLK_S.OK);
    expect(req.written).toEqual(new Array(1024).fill(9));
    expect(device.completed).toEqual([req]);
  });

  it("awaits replies only for requests a connected back end holds", () => {
    const { device, fe, setUp } = setup();
    expect(fe.awaitingReplies()).toBe(false);
    device.queue.push(blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512 }));
    fe.onNotify();
    expect(fe.awaitingReplies()).toBe(true);
    fe.onResponse({ id: 1, op: "read", ok: true, length: 512, data: new Uint8Array(512) });
    expect(fe.awaitingReplies()).toBe(false);
    // Not sent (the channel was full), or the back end went away: nothing to wait for.
    setUp(false);
    device.queue.push(blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512 }));
    fe.onNotify();
    expect(fe.awaitingReplies()).toBe(false);
    setUp(true);
    fe.retryUnsent();
    expect(fe.awaitingReplies()).toBe(true);
    fe.detach();
    expect(fe.awaitingReplies()).toBe(false);
  });

  it("answers a malformed request with an error status and sends nothing", () => {
    const { device, fe, sent } = setup();
    const req = blkRequest(VIRTIO_BLK_T.IN, 2047, { readLength: 4096 });
    device.queue.push(req);
    fe.onNotify();
    expect(sent).toEqual([]);
    expect(req.status).toBe(VIRTIO_BLK_S.IOERR);
    expect(fe.status().refused).toEqual({ "out-of-range": 1 });
  });

  it.each([
    ["a reply to an unknown request", { id: 99, op: "read", ok: true, length: 512, data: new Uint8Array(512) }, "unknown-id: reply to request 99, which is not in flight"],
    ["a reply with the wrong op", { id: 1, op: "write", ok: true, length: 512 }, "wrong-op: reply to read request 1 says write"],
    ["a reply with too little data", { id: 1, op: "read", ok: true, length: 512, data: new Uint8Array(100) }, "wrong-length: reply to read request 1: 100 data bytes, length 512, expected 512"],
  ] as const)("refuses %s and leaves the request in flight", (_n, resp, violation) => {
    const { device, fe, violations } = setup();
    const req = blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512 });
    device.queue.push(req);
    fe.onNotify();
    fe.onResponse({ ...resp });
    expect(violations).toEqual([violation]);
    expect(req.status).toBeUndefined();
    expect(fe.inFlightCount).toBe(1);
    // The real reply still completes it; a second copy of it is refused.
    fe.onResponse({ id: 1, op: "read", ok: true, length: 512, data: new Uint8Array(512) });
    expect(req.status).toBe(VIRTIO_BLK_S.OK);
    fe.onResponse({ id: 1, op: "read", ok: true, length: 512, data: new Uint8Array(512) });
    expect(violations.at(-1)).toBe("unknown-id: reply to request 1, which is not in flight");
  });

  it("keeps requests while the back end is away and re-sends them in order when it is back", () => {
    const { device, fe, sent, setUp } = setup();
    setUp(false);
    for (let i = 0; i < 3; i++) device.queue.push(blkRequest(VIRTIO_BLK_T.OUT, i, { data: new Uint8Array(512).fill(i) }));
    fe.onNotify();
    expect(sent).toEqual([]);
    const resent: BackendRequest[] = [];
    fe.attach({ send: (r) => (resent.push(r), true) });
    expect(resent.map((r) => [r.id, r.sector])).toEqual([
      [1, 0],
      [2, 1],
      [3, 2],
    ]);
    // The guest saw no error meanwhile.
    expect(device.completed).toEqual([]);
    expect(fe.status().replayed).toBe(0); // never sent before: not a replay
    fe.detach();
    fe.attach({ send: () => true });
    expect(fe.status().replayed).toBe(3); // sent to a back end that went away
  });

  it("takes a failed reply for a broken disk VM: a violation, and the request waits for its successor", () => {
    const { device, fe } = setup();
    const req = blkRequest(VIRTIO_BLK_T.OUT, 0, { data: new Uint8Array(512) });
    device.queue.push(req);
    fe.onNotify();
    fe.onResponse({ id: 1, op: "write", ok: false, length: 0 });
    expect(req.status).toBeUndefined();
    expect(fe.status()).toMatchObject({ ioErrors: 0, inFlight: 1, violations: { "io-error": 1 } });
    fe.detach();
    fe.attach({ send: () => true });
    fe.onResponse({ id: 1, op: "write", ok: true, length: 512 });
    expect(req.status).toBe(VIRTIO_BLK_S.OK);
  });

  it("catches read data that differs from what was written there, writes the damaged sector again and reads again", () => {
    const { device, fe, sent } = setup();
    const data = new Uint8Array(1024).map((_, i) => i * 7);
    const write = blkRequest(VIRTIO_BLK_T.OUT, 8, { data });
    device.queue.push(write);
    fe.onNotify();
    fe.onResponse({ id: 1, op: "write", ok: true, length: 1024 });
    const read = blkRequest(VIRTIO_BLK_T.IN, 8, { readLength: 1024 });
    device.queue.push(read);
    fe.onNotify();
    const wrong = data.slice();
    wrong[700] ^= 4;
    fe.onResponse({ id: 2, op: "read", ok: true, length: 1024, data: wrong });
    expect(read.status).toBeUndefined();
    expect(fe.status()).toMatchObject({ violations: { "wrong-data": 1 }, repairs: 1 });
    // Sector 9 (byte 700 of the read) goes to disk again from the log, then the read goes again.
    const [repair, again] = sent.slice(-2);
    expect(repair).toMatchObject({ op: "write", sector: 9, length: 512, repair: true });
    expect(repair.data).toEqual(data.subarray(512, 1024));
    expect(again).toMatchObject({ op: "read", sector: 8, length: 1024 });
    fe.onResponse({ id: repair.id, op: "write", ok: true, length: 512 });
    fe.onResponse({ id: again.id, op: "read", ok: true, length: 1024, data });
    expect(read.status).toBe(VIRTIO_BLK_S.OK);
    expect(read.written).toEqual([...data]);
    // Sectors never written through the front end are not checked.
    const other = blkRequest(VIRTIO_BLK_T.IN, 100, { readLength: 512 });
    device.queue.push(other);
    fe.onNotify();
    fe.onResponse({ id: sent[sent.length - 1].id, op: "read", ok: true, length: 512, data: new Uint8Array(512).fill(9) });
    expect(other.status).toBe(VIRTIO_BLK_S.OK);
  });

  it("fails a read with an I/O error when a damaged sector is no longer in the log, and stops checking it", () => {
    const { device, fe, sent } = setup();
    const data = new Uint8Array(512).fill(3);
    device.queue.push(blkRequest(VIRTIO_BLK_T.OUT, 20, { data }));
    fe.onNotify();
    fe.onResponse({ id: 1, op: "write", ok: true, length: 512 });
    // The read gets damaged data three times in a row: the repairs do not take.
    const read = blkRequest(VIRTIO_BLK_T.IN, 20, { readLength: 512 });
    device.queue.push(read);
    fe.onNotify();
    for (let i = 0; i < 3; i++) {
      const r = sent.filter((s) => s.op === "read").pop()!;
      fe.onResponse({ id: r.id, op: "read", ok: true, length: 512, data: new Uint8Array(512).fill(4) });
    }
    expect(read.status).toBe(VIRTIO_BLK_S.IOERR);
    expect(fe.status()).toMatchObject({ lostSectors: 1, ioErrors: 1 });
  });

  it("after a fault, writes again what was acknowledged just before it, ahead of the replay", () => {
    const { device, fe, sent } = setup();
    device.queue.push(blkRequest(VIRTIO_BLK_T.OUT, 30, { data: new Uint8Array(512).fill(5) }));
    fe.onNotify();
    fe.onResponse({ id: 1, op: "write", ok: true, length: 512 });
    const read = blkRequest(VIRTIO_BLK_T.IN, 100, { readLength: 512 });
    device.queue.push(read);
    fe.onNotify();
    fe.detach();
    sent.length = 0;
    fe.attach({ send: (r) => (sent.push(r), true) });
    expect(sent.map((r) => [r.op, r.sector, !!r.repair])).toEqual([
      ["write", 30, true],
      ["read", 100, false],
    ]);
  });

  const overlapping = () => {
    const ctx = setup();
    const first = new Uint8Array(4 * 512).fill(1); // sectors 40-43
    const second = new Uint8Array(4 * 512).fill(2); // sectors 42-45
    ctx.device.queue.push(blkRequest(VIRTIO_BLK_T.OUT, 40, { data: first }), blkRequest(VIRTIO_BLK_T.OUT, 42, { data: second }));
    ctx.fe.onNotify();
    ctx.fe.onResponse({ id: 1, op: "write", ok: true, length: 2048 });
    return { ...ctx, first };
  };

  it("with two overlapping writes in flight, checks the first one's own sectors once it is acknowledged", () => {
    const { device, fe, violations } = overlapping();
    device.queue.push(blkRequest(VIRTIO_BLK_T.IN, 40, { readLength: 2048 }));
    fe.onNotify();
    // Sectors 40-41 must hold the first write; 42-43 may hold either while the second is in flight.
    const data = new Uint8Array(2048).fill(2);
    data.fill(7, 0, 512); // damaged
    data.fill(1, 512, 1024); // as written
    fe.onResponse({ id: 3, op: "read", ok: true, length: 2048, data });
    expect(violations).toEqual(["wrong-data: read request 3: 1 sectors from 40 are not what was written there"]);
  });

  it("with two overlapping writes in flight, a fault re-writes the first one's own sectors and replays the second", () => {
    const { fe, sent, first } = overlapping();
    fe.detach();
    sent.length = 0;
    fe.attach({ send: (r) => (sent.push(r), true) });
    expect(sent.map((r) => [r.op, r.sector, r.length, !!r.repair])).toEqual([
      ["write", 40, 1024, true],
      ["write", 42, 2048, false],
    ]);
    expect(sent[0].data).toEqual(first.subarray(0, 1024));
  });

  it("fails every request with an I/O error once the back end is given up, until a new one attaches", () => {
    const { device, fe, sent } = setup();
    const pending = blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512 });
    device.queue.push(pending);
    fe.onNotify();
    fe.failAll("disk VM failed: 5 restarts within 60 s");
    expect(pending.status).toBe(VIRTIO_BLK_S.IOERR);
    const later = blkRequest(VIRTIO_BLK_T.OUT, 0, { data: new Uint8Array(512) });
    device.queue.push(later);
    fe.onNotify();
    expect(later.status).toBe(VIRTIO_BLK_S.IOERR);
    expect(fe.status()).toMatchObject({ ioErrors: 2, inFlight: 0, failed: "disk VM failed: 5 restarts within 60 s" });
    fe.attach({ send: (r) => (sent.push(r), true) });
    const after = blkRequest(VIRTIO_BLK_T.IN, 0, { readLength: 512 });
    device.queue.push(after);
    fe.onNotify();
    expect(sent.at(-1)).toMatchObject({ op: "read" });
    expect(fe.status().failed).toBeNull();
  });
});
