import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BlockBackEnd } from "../../../dist/drivervm/disk/backend.js";
import { RING, WINDOW } from "../../../dist/drivervm/disk/guest-ring.js";
import { ImageFile } from "../../../dist/drivervm/disk/image-file.js";
import { GuestWindow, WindowRegistration } from "../../../dist/drivervm/window.js";
import type { Machine } from "../../../dist/hypervisor/v86/adapter.js";
import type { BackendResponse } from "../../../dist/bridge/virtio-blk/device.js";

const MEMORY_PAGES = 1024; // a 4 MiB guest

/** Guest memory as a plain array, and blkback played by the test. */
function fakeMachine(): Machine {
  const mem = new Uint8Array(MEMORY_PAGES * 4096);
  return { memory: () => mem, writePhysical: (a: number, d: Uint8Array) => mem.set(d, a) } as unknown as Machine;
}

/** The window on frames 100.. (reversed, to catch offset mistakes). */
function window(): GuestWindow {
  return new GuestWindow(Array.from({ length: WINDOW.PAGES }, (_, i) => 100 + WINDOW.PAGES - 1 - i));
}

function setup() {
  const machine = fakeMachine();
  const w = window();
  w.writeU32(machine, RING.OFF_MAGIC, RING.MAGIC);
  const dir = mkdtempSync(join(tmpdir(), "bh-be-"));
  writeFileSync(join(dir, "disk.img"), new Uint8Array(1 << 20));
  const image = new ImageFile(join(dir, "disk.img"));
  const replies: BackendResponse[] = [];
  const violations: string[] = [];
  let kicks = 0;
  const be = new BlockBackEnd(machine, image, () => kicks++, (r, parts) => {
    // The data comes as views of the guest's window, valid until the guest runs: keep a copy, as the device does.
    if (parts) r.data = Uint8Array.from(parts.flatMap((p) => [...p]));
    replies.push(r);
  }, (v) => violations.push(v));
  be.attachWindow(w);
  /** Plays blkback: answers the next queued request with a status and length. */
  const answer = (status: number, lengthOverride?: number, idOverride?: number) => {
    const cons = w.readU32(machine, RING.OFF_RESP_PROD);
    const slot = cons % RING.SLOTS;
    const req = w.copyOut(machine, RING.REQ_BASE + slot * RING.REQ_SIZE, RING.REQ_SIZE);
    const v = new DataView(req.buffer);
    const resp = new Uint8Array(RING.RESP_SIZE);
    const r = new DataView(resp.buffer);
    r.setUint32(0, idOverride ?? v.getUint32(0, true), true);
    r.setUint8(4, status);
    r.setUint8(5, v.getUint8(4));
    r.setUint32(8, lengthOverride ?? v.getUint32(16, true), true);
    w.copyIn(machine, RING.RESP_BASE + slot * RING.RESP_SIZE, resp);
    w.writeU32(machine, RING.OFF_RESP_PROD, cons + 1);
    return { dataOffset: v.getUint32(20, true) };
  };
  return { machine, w, be, replies, violations, answer, kicks: () => kicks };
}

describe("BlockBackEnd (disk VM side)", () => {
  it("puts a write's data in the window, rings, and passes blkback's reply on", () => {
    const { machine, w, be, replies, answer, kicks } = setup();
    be.submit({ id: 5, op: "write", sector: 2, length: 1024, data: new Uint8Array(1024).fill(0xab) });
    expect(kicks()).toBe(1);
    const { dataOffset } = answer(0);
    expect(w.copyOut(machine, dataOffset, 1024)).toEqual(new Uint8Array(1024).fill(0xab));
    be.onKick();
    expect(replies).toEqual([{ id: 5, op: "write", ok: true, length: 1024 }]);
  });

  it("rings blkback only when it has caught up and stopped looking for work", () => {
    const { machine, w, be, answer, kicks } = setup();
    // blkback caught up (req_cons == req_prod) but still looks at the ring: no doorbell.
    w.writeU32(machine, RING.OFF_SPINNING, 1);
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    expect(kicks()).toBe(0);
    // It took the request (req_cons moves on), answered, and stopped looking.
    w.writeU32(machine, RING.OFF_REQ_CONS, 1);
    answer(0);
    w.writeU32(machine, RING.OFF_SPINNING, 0);
    be.onKick();
    be.submit({ id: 2, op: "read", sector: 0, length: 512 });
    expect(kicks()).toBe(1);
  });

  it("counts blkback's looks at an empty ring, and the time between them, apart from its real doorbells", async () => {
    const { machine, w, be, answer } = setup();
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // Looking: doorbells with nothing to collect while blkback says it looks.
    w.writeU32(machine, RING.OFF_SPINNING, 1);
    be.onKick();
    be.onKick();
    be.onKick();
    expect(be.metrics.looks).toBe(3);
    expect(be.metrics.lookMs).toBeGreaterThanOrEqual(0);
    expect(be.metrics.lookMs).toBeLessThan(0.25 * 2);
    // A gap longer than a look (blkback slept or served meanwhile) is not looking.
    const before = be.metrics.lookMs;
    await pause(5);
    be.onKick();
    expect(be.metrics.looks).toBe(4);
    expect(be.metrics.lookMs).toBe(before);
    // A doorbell with a reply to collect is work, not a look, and ends the wait.
    w.writeU32(machine, RING.OFF_SPINNING, 0);
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    answer(0);
    be.onKick();
    expect(be.metrics.looks).toBe(4);
    // Not looking (it said so): an empty doorbell is not counted either.
    be.onKick();
    expect(be.metrics.looks).toBe(4);
  });

  it("copies a read's data out of the window", () => {
    const { machine, w, be, replies, answer } = setup();
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    const { dataOffset } = answer(0);
    w.copyIn(machine, dataOffset, new Uint8Array(512).fill(3));
    be.onKick();
    expect(replies[0]).toMatchObject({ id: 1, ok: true, length: 512 });
    expect(replies[0].data).toEqual(new Uint8Array(512).fill(3));
  });

  it("treats a reply for the wrong request as a violation and passes nothing on", () => {
    const { be, replies, violations, answer } = setup();
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    answer(0, undefined, 77);
    be.onKick();
    expect(replies).toEqual([]);
    expect(violations).toEqual(["reply for request 77, which is not in the ring"]);
  });

  it("accepts replies in completion order, matched by id", () => {
    const { machine, w, be, replies } = setup();
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    be.submit({ id: 2, op: "write", sector: 8, length: 512, data: new Uint8Array(512) });
    // blkback finished the write first: reply slot 0 carries request 2.
    const resp = new Uint8Array(RING.RESP_SIZE);
    const r = new DataView(resp.buffer);
    r.setUint32(0, 2, true);
    r.setUint8(5, 1);
    r.setUint32(8, 512, true);
    w.copyIn(machine, RING.RESP_BASE, resp);
    r.setUint32(0, 1, true);
    r.setUint8(5, 0);
    w.copyIn(machine, RING.RESP_BASE + RING.RESP_SIZE, resp);
    w.writeU32(machine, RING.OFF_RESP_PROD, 2);
    be.onKick();
    expect(replies.map((x) => [x.id, x.op, x.ok])).toEqual([
      [2, "write", true],
      [1, "read", true],
    ]);
  });

  it("treats a second reply to the same request as a violation", () => {
    const { be, replies, violations, answer } = setup();
    be.submit({ id: 1, op: "read", sector: 0, length: 512 });
    answer(0);
    be.onKick();
    be.submit({ id: 2, op: "read", sector: 0, length: 512 });
    answer(0, undefined, 1);
    be.onKick();
    expect(replies.map((x) => x.id)).toEqual([1]);
    expect(violations).toEqual(["reply for request 1, which is not in the ring"]);
  });

  it("treats more replies than requests as a violation", () => {
    const { machine, w, be, replies, violations } = setup();
    w.writeU32(machine, RING.OFF_RESP_PROD, 3);
    be.onKick();
    expect(replies).toEqual([]);
    expect(violations).toEqual(["helper claims 3 replies with 0 requests in the ring"]);
  });

  it("turns a short transfer into an I/O error, not wrong data", () => {
    const { be, replies, answer } = setup();
    be.submit({ id: 1, op: "read", sector: 0, length: 4096 });
    answer(0, 512);
    be.onKick();
    expect(replies).toEqual([{ id: 1, op: "read", ok: false, length: 0, data: undefined }]);
  });

  it("queues past the ring and its data slots, in order", () => {
    const { be, replies, answer } = setup();
    for (let i = 1; i <= 12; i++) be.submit({ id: i, op: "read", sector: 0, length: 512 });
    for (let i = 0; i < 8; i++) answer(0);
    be.onKick();
    for (let i = 0; i < 4; i++) answer(0);
    be.onKick();
    expect(replies.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });
});

describe("WindowRegistration (what blkback reports)", () => {
  const lines = (runs: string) => {
    const reg = new WindowRegistration(MEMORY_PAGES, WINDOW.PAGES);
    reg.addLine(["0", runs]);
    return reg;
  };

  it("accepts a window of the agreed size inside guest memory", () => {
    const { window } = lines(`64+${WINDOW.PAGES}`).finish([String(WINDOW.PAGES), "1048576"]);
    expect(window.pfns.length).toBe(WINDOW.PAGES);
  });

  it.each([
    ["a frame outside the VM's RAM", `3ff+${WINDOW.PAGES}`, /outside the VM's 1024 pages/],
    ["a repeated frame", `64+${WINDOW.PAGES - 1},64+1`, /appears twice/],
    ["too few pages", `64+10`, /window has 10 pages/],
  ])("refuses %s", (_n, runs, message) => {
    expect(() => lines(runs).finish([String(WINDOW.PAGES), "0"])).toThrow(message);
  });

  it("refuses malformed lines", () => {
    expect(() => lines("zz+1")).toThrow(/bad run/);
    expect(() => new WindowRegistration(MEMORY_PAGES, WINDOW.PAGES).addLine(["5", "64+1"])).toThrow(/starts at page 5, expected 0/);
    expect(() => lines(`64+${WINDOW.PAGES + 1}`)).toThrow(/larger than agreed/);
  });
});
