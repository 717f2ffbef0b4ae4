// A driver VM helper's pinned window (blkback's, netback's), as the host sees it: page frame
// numbers reported once by the helper, turned into a map from window
// offsets to guest physical addresses. The helper is untrusted: a frame
// outside the VM's RAM, a repeated frame or a wrong count is refused. The
// window belongs to the driver VM, so a lying helper can only hurt itself.
import type { Machine } from "../hypervisor/v86/adapter.js";

/** writeU32's scratch: copyIn copies it into guest memory at once. */
const word = new Uint8Array(4);

const PAGE = 4096;

export class WindowError extends Error {
  override readonly name = "WindowError";
}

/** Collects `window-pfns` lines until `window-end`. */
export class WindowRegistration {
  private readonly pfns: number[] = [];
  private done = false;

  /** memoryPages: the VM's RAM; windowPages: the size helper and host agreed on. */
  constructor(
    private readonly memoryPages: number,
    private readonly windowPages: number,
  ) {}

  /** `BH1 window-pfns <first_page_index> <pfnhex>+<count>,...` */
  addLine(args: string[]): void {
    if (this.done) throw new WindowError("window already registered");
    const [firstText, runsText] = args;
    if (args.length !== 2 || !/^\d{1,6}$/.test(firstText)) throw new WindowError("bad window-pfns line");
    if (Number(firstText) !== this.pfns.length) throw new WindowError(`window-pfns starts at page ${firstText}, expected ${this.pfns.length}`);
    for (const run of runsText.split(",")) {
      const m = /^([0-9a-f]{1,8})\+(\d{1,6})$/.exec(run);
      if (!m) throw new WindowError(`bad run ${JSON.stringify(run.slice(0, 40))}`);
      const start = parseInt(m[1], 16);
      const count = Number(m[2]);
      if (count === 0 || this.pfns.length + count > this.windowPages) throw new WindowError("window larger than agreed");
      for (let i = 0; i < count; i++) this.pfns.push(start + i);
    }
  }

  /** `BH1 window-end <total_pages> <device_bytes>` */
  finish(args: string[]): { window: GuestWindow; deviceBytes: number } {
    const total = Number(args[0]);
    const deviceBytes = Number(args[1]);
    if (args.length !== 2 || !Number.isInteger(total) || !Number.isInteger(deviceBytes)) throw new WindowError("bad window-end line");
    if (total !== this.windowPages || this.pfns.length !== this.windowPages) {
      throw new WindowError(`window has ${this.pfns.length} pages (announced ${total}), expected ${this.windowPages}`);
    }
    const seen = new Set<number>();
    for (const pfn of this.pfns) {
      if (pfn >= this.memoryPages) throw new WindowError(`frame 0x${pfn.toString(16)} is outside the VM's ${this.memoryPages} pages`);
      if (seen.has(pfn)) throw new WindowError(`frame 0x${pfn.toString(16)} appears twice`);
      seen.add(pfn);
    }
    this.done = true;
    return { window: new GuestWindow(this.pfns), deviceBytes };
  }
}

export class GuestWindow {
  /** Runs of physically contiguous pages (helpers lay their windows out in frame order, window.h). */
  readonly runs: number;

  constructor(readonly pfns: readonly number[]) {
    let runs = 0;
    for (let i = 0; i < pfns.length; i++) if (i === 0 || pfns[i] !== pfns[i - 1] + 1) runs++;
    this.runs = runs;
  }

  /** Copies data into the window at a window offset, one write per run of contiguous frames. */
  copyIn(machine: Machine, offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    let done = 0;
    while (done < data.length) {
      const at = offset + done;
      const phys = this.pfns[Math.floor(at / PAGE)] * PAGE + (at % PAGE);
      let length = Math.min(PAGE - (at % PAGE), data.length - done);
      while (done + length < data.length && this.pfns[Math.floor((at + length) / PAGE)] * PAGE === phys + length) {
        length += Math.min(PAGE, data.length - done - length);
      }
      machine.writePhysical(phys, data.subarray(done, done + length));
      done += length;
    }
  }

  /** Copies data out of the window (into a buffer of its own: callers read its `.buffer`). */
  copyOut(machine: Machine, offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let at = 0;
    for (const part of this.views(machine, offset, length)) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  /**
   * Views of window bytes straight into guest memory, one per run of
   * physically contiguous pages (no copy): valid until the guest runs again.
   */
  views(machine: Machine, offset: number, length: number): Uint8Array[] {
    this.check(offset, length);
    const mem = machine.memory();
    const out: Uint8Array[] = [];
    let done = 0;
    let runStart = -1;
    let runEnd = -1;
    while (done < length) {
      const at = offset + done;
      const inPage = Math.min(PAGE - (at % PAGE), length - done);
      const phys = this.pfns[Math.floor(at / PAGE)] * PAGE + (at % PAGE);
      if (phys !== runEnd) {
        if (runStart >= 0) out.push(mem.subarray(runStart, runEnd));
        runStart = phys;
      }
      runEnd = phys + inPage;
      done += inPage;
    }
    if (runStart >= 0) out.push(mem.subarray(runStart, runEnd));
    return out;
  }

  /**
   * A view of window bytes that lie in one page, straight into guest memory
   * (no copy): valid until the guest runs again. Ranges that cross a page
   * come back as a copy.
   */
  view(machine: Machine, offset: number, length: number): Uint8Array {
    this.check(offset, length);
    if ((offset % PAGE) + length > PAGE) return this.copyOut(machine, offset, length);
    const phys = this.pfns[Math.floor(offset / PAGE)] * PAGE + (offset % PAGE);
    return machine.memory().subarray(phys, phys + length);
  }

  readU32(machine: Machine, offset: number): number {
    const b = this.view(machine, offset, 4);
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }

  /** Little-endian; through one scratch word rather than a fresh array per call (this runs per frame). */
  writeU32(machine: Machine, offset: number, value: number): void {
    word[0] = value & 0xff;
    word[1] = (value >>> 8) & 0xff;
    word[2] = (value >>> 16) & 0xff;
    word[3] = (value >>> 24) & 0xff;
    this.copyIn(machine, offset, word);
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.pfns.length * PAGE) {
      throw new WindowError(`window access ${offset}+${length} outside the window`);
    }
  }
}

/**
 * The control lines by which a helper registers its window, for a device's
 * onControlLine: `window-pfns` lines, then `window-end`. A bad registration
 * is reported as a violation by the helper's own guest; true when a line
 * was consumed.
 */
export function windowLines(
  machine: Machine,
  windowPages: number,
  onWindow: (window: GuestWindow, deviceBytes: number) => void,
  onViolation: (detail: string) => void,
): (verb: string, args: string[]) => boolean {
  let registration: WindowRegistration | undefined;
  return (verb, args) => {
    if (verb !== "window-pfns" && verb !== "window-end") return false;
    try {
      if (verb === "window-pfns") {
        (registration ??= new WindowRegistration(Math.floor(machine.memory().length / PAGE), windowPages)).addLine(args);
      } else {
        if (!registration) throw new WindowError("window-end before window-pfns");
        const { window, deviceBytes } = registration.finish(args);
        registration = undefined;
        onWindow(window, deviceBytes);
      }
    } catch (err) {
      registration = undefined;
      onViolation((err as Error).message);
    }
    return true;
  };
}
