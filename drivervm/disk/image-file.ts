// The physical disk's backing store: a raw image file on the host, written
// through. A write reaches the file (the host's page cache) before the IDE
// command completes, so nothing the disk VM acknowledged dies with its
// worker; fsync() is what a FLUSH reaches.
import { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, writeSync, ftruncateSync } from "node:fs";
import { dirname } from "node:path";
import type { DiskStore } from "../../hypervisor/v86/adapter.js";

export class DiskImageError extends Error {
  override readonly name = "DiskImageError";
}

export const SECTOR = 512;

/** Parses "256M", "1G", "1048576" into bytes (a multiple of 1 MiB). */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(text.trim());
  if (!m) throw new DiskImageError(`bad size ${JSON.stringify(text)}: use e.g. 256M or 1G`);
  const unit = (m[2] ?? "").toUpperCase()[0];
  const bytes = Number(m[1]) * (unit === "K" ? 2 ** 10 : unit === "M" ? 2 ** 20 : unit === "G" ? 2 ** 30 : 1);
  if (bytes < 2 ** 20 || bytes % 2 ** 20 !== 0) throw new DiskImageError(`disk size ${text} must be a whole number of MiB, at least 1 MiB`);
  if (bytes > 2 ** 31) throw new DiskImageError(`disk size ${text} is over the 2 GiB that v86's IDE model handles`);
  return bytes;
}

/** Creates the image (sparse, zero-filled) if it does not exist; returns its size. */
export function ensureImage(path: string, sizeBytes: number): number {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true });
    const fd = openSync(path, "wx");
    try {
      ftruncateSync(fd, sizeBytes);
    } finally {
      closeSync(fd);
    }
    return sizeBytes;
  }
  const size = fstatSizeOf(path);
  if (size % SECTOR !== 0 || size === 0) throw new DiskImageError(`${path}: size ${size} is not a positive multiple of ${SECTOR} bytes`);
  if (size > 2 ** 31) throw new DiskImageError(`${path}: ${size} bytes is over the 2 GiB that v86's IDE model handles`);
  return size;
}

function fstatSizeOf(path: string): number {
  const fd = openSync(path, "r");
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

export class ImageFile implements DiskStore {
  readonly sizeBytes: number;
  private fd: number;
  fsyncs = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, "r+");
    this.sizeBytes = fstatSync(this.fd).size;
  }

  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(Math.max(0, Math.min(length, this.sizeBytes - offset)));
    this.readInto(offset, out);
    return out;
  }

  readInto(offset: number, target: Uint8Array): number {
    const want = Math.max(0, Math.min(target.length, this.sizeBytes - offset));
    let done = 0;
    while (done < want) {
      const n = readSync(this.fd, target, done, want - done, offset + done);
      if (n === 0) break; // past the end of a file that shrank under us
      done += n;
    }
    return done;
  }

  write(offset: number, data: Uint8Array): void {
    const length = Math.max(0, Math.min(data.length, this.sizeBytes - offset));
    let done = 0;
    while (done < length) done += writeSync(this.fd, data, done, length - done, offset + done);
  }

  /** Makes every write so far durable. */
  flush(): void {
    fsyncSync(this.fd);
    this.fsyncs++;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
