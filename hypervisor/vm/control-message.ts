// Parser for what a guest helper writes on its control channel. The guest
// is untrusted: every line is parsed once, here, into a typed value or a
// typed error; nothing behind this parser sees raw guest bytes.

export interface PciFunction {
  /** domain:bus:device.function as sysfs names it, e.g. 0000:00:1e.0 */
  bdf: string;
  vendor: number;
  device: number;
  classCode: number;
  irq: number;
  bars: Array<{ kind: "io" | "mem"; start: number; size: number }>;
}

export type ControlMessage =
  | { kind: "hello"; role: string }
  | { kind: "pong"; seq: number }
  | { kind: "clock-ok" }
  | { kind: "out"; id: number; data: Buffer }
  | { kind: "exit"; id: number; status: number }
  | { kind: "exit-refused"; id: number; reason: string }
  | { kind: "pci"; fn: PciFunction }
  | { kind: "inventory-end"; count: number }
  /** A helper turned hostile on request (fault injection) and wrote this many bad entries. */
  | { kind: "garbage-sent"; count: number }
  | { kind: "error"; what: string; detail: string };

export type ControlParseError = { kind: "invalid"; reason: string; line: string };

const MAX_ID = 2 ** 31 - 1;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function int(text: string | undefined, max = MAX_ID): number | undefined {
  if (text === undefined || !/^\d{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

function hex(text: string | undefined, max: number): number | undefined {
  if (text === undefined || !/^(0x)?[0-9a-fA-F]{1,8}$/.test(text)) return undefined;
  const n = parseInt(text.replace(/^0x/, ""), 16);
  return n <= max ? n : undefined;
}

function parseBars(text: string): PciFunction["bars"] | undefined {
  if (text === "-") return [];
  const bars: PciFunction["bars"] = [];
  for (const part of text.split(",")) {
    const m = /^(io|mem|none):0x([0-9a-f]{1,16})\+0x([0-9a-f]{1,16})$/.exec(part);
    if (!m) return undefined;
    if (m[1] === "none") continue;
    bars.push({ kind: m[1] as "io" | "mem", start: parseInt(m[2], 16), size: parseInt(m[3], 16) });
  }
  return bars;
}

export function parseControlLine(raw: string): ControlMessage | ControlParseError {
  const line = raw.replace(/\r$/, "");
  const bad = (reason: string): ControlParseError => ({ kind: "invalid", reason, line: line.slice(0, 200) });
  const words = line.split(" ");
  if (words[0] !== "BH1") return bad("missing BH1 tag");
  const [, verb, ...args] = words;
  switch (verb) {
    case "hello":
      return args.length === 1 && /^[a-z]{1,16}$/.test(args[0]) ? { kind: "hello", role: args[0] } : bad("bad hello");
    case "pong": {
      const seq = int(args[0]);
      return seq !== undefined && args.length === 1 ? { kind: "pong", seq } : bad("bad pong");
    }
    case "clock-ok":
      return { kind: "clock-ok" };
    case "out": {
      const id = int(args[0]);
      if (id === undefined || args.length !== 2 || !BASE64.test(args[1])) return bad("bad out");
      return { kind: "out", id, data: Buffer.from(args[1], "base64") };
    }
    case "exit": {
      const id = int(args[0]);
      if (id === undefined || args.length < 2) return bad("bad exit");
      const status = int(args[1], 255);
      if (status !== undefined && args.length === 2) return { kind: "exit", id, status };
      return { kind: "exit-refused", id, reason: args.slice(1).join(" ").slice(0, 100) };
    }
    case "pci": {
      // pci BDF VENDOR:DEVICE CLASS IRQ BARS
      if (args.length !== 5) return bad("bad pci");
      const [bdf, ids, cls, irqText, barsText] = args;
      const [vendorText, deviceText] = ids.split(":");
      const vendor = hex(vendorText, 0xffff);
      const device = hex(deviceText, 0xffff);
      const classCode = hex(cls, 0xffffff);
      const irq = int(irqText, 255);
      const bars = parseBars(barsText);
      if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(bdf)) return bad("bad pci address");
      if (vendor === undefined || device === undefined || classCode === undefined || irq === undefined || !bars) {
        return bad("bad pci fields");
      }
      return { kind: "pci", fn: { bdf, vendor, device, classCode, irq, bars } };
    }
    case "inventory-end": {
      const count = int(args[0], 256);
      return count !== undefined ? { kind: "inventory-end", count } : bad("bad inventory-end");
    }
    case "garbage-sent": {
      const count = int(args[0], 100_000);
      return count !== undefined && args.length === 1 ? { kind: "garbage-sent", count } : bad("bad garbage-sent");
    }
    case "error":
      return { kind: "error", what: (args[0] ?? "").slice(0, 32), detail: args.slice(1).join(" ").slice(0, 200) };
    default:
      return bad(`unknown kind ${JSON.stringify((verb ?? "").slice(0, 32))}`);
  }
}
