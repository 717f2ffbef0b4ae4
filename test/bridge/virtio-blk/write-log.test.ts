import { describe, expect, it } from "vitest";
import { WriteLog } from "../../../dist/bridge/virtio-blk/checksums.js";

const SECTOR = 512;
const block = (sectors: number, tag: number) => Uint8Array.from({ length: sectors * SECTOR }, (_, i) => (tag * 7 + (i >> 9)) & 0xff);

describe("WriteLog", () => {
  it("hands out copies of the newest data per sector and of the writes since a time", () => {
    const log = new WriteLog(8 * SECTOR, 64);
    log.add(0, block(4, 1), 10);
    log.add(2, block(2, 2), 20); // overwrites sectors 2-3
    expect(log.sector(1)).toEqual(block(4, 1).subarray(SECTOR, 2 * SECTOR));
    expect(log.sector(3)).toEqual(block(2, 2).subarray(SECTOR, 2 * SECTOR));
    expect(log.sector(5)).toBeUndefined();
    // The first write is the latest only for sectors 0-1 now: those, then the second.
    expect(log.since(0)).toEqual([
      { sector: 0, data: block(4, 1).subarray(0, 2 * SECTOR) },
      { sector: 2, data: block(2, 2) },
    ]);
    expect(log.since(11)).toEqual([{ sector: 2, data: block(2, 2) }]);
    expect(log.since(21)).toEqual([]);
    const copy = log.sector(3)!;
    copy.fill(0);
    expect(log.sector(3)).toEqual(block(2, 2).subarray(SECTOR, 2 * SECTOR));
  });

  it("forgets what newer writes overwrote in its buffer, and matches a simple model under a random load", () => {
    const sectors = 256;
    const log = new WriteLog(32 * SECTOR, sectors);
    // Model: every write in order; the log must answer from the newest writes that fit in 32 sectors.
    const writes: Array<{ sector: number; data: Uint8Array }> = [];
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let i = 0; i < 3000; i++) {
      const n = 1 + rand(12);
      const sector = rand(sectors - n);
      const data = block(n, i);
      log.add(sector, data, i);
      writes.push({ sector, data });
      if (i % 50 !== 0) continue;
      for (let s = 0; s < sectors; s++) {
        const got = log.sector(s);
        // The newest write of s, if any.
        let newest: { sector: number; data: Uint8Array } | undefined;
        for (let j = writes.length - 1; j >= 0 && !newest; j--) if (s >= writes[j].sector && s < writes[j].sector + writes[j].data.length / SECTOR) newest = writes[j];
        if (got) expect(got).toEqual(newest!.data.subarray((s - newest!.sector) * SECTOR, (s - newest!.sector + 1) * SECTOR));
        // The last write is always kept whole.
        if (newest === writes[writes.length - 1]) expect(got).toBeDefined();
      }
    }
  });

  it("ignores a write larger than the log or off the disk", () => {
    const log = new WriteLog(4 * SECTOR, 16);
    log.add(0, block(5, 1));
    log.add(14, block(4, 1));
    expect(log.sector(0)).toBeUndefined();
    expect(log.sector(14)).toBeUndefined();
  });
});
