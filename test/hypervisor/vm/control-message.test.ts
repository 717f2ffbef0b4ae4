import { describe, expect, it } from "vitest";
import { parseControlLine } from "../../../dist/hypervisor/vm/control-message.js";

describe("parseControlLine (guest control channel)", () => {
  it("parses every message kind a helper sends", () => {
    expect(parseControlLine("BH1 hello pci")).toEqual({ kind: "hello", role: "pci" });
    expect(parseControlLine("BH1 pong 42\r")).toEqual({ kind: "pong", seq: 42 });
    expect(parseControlLine("BH1 clock-ok")).toEqual({ kind: "clock-ok" });
    expect(parseControlLine("BH1 out 7 aTY4Ngo=")).toEqual({ kind: "out", id: 7, data: Buffer.from("i686\n") });
    expect(parseControlLine("BH1 exit 7 3")).toEqual({ kind: "exit", id: 7, status: 3 });
    expect(parseControlLine("BH1 exit 7 busy")).toEqual({ kind: "exit-refused", id: 7, reason: "busy" });
    expect(parseControlLine("BH1 inventory-end 7")).toEqual({ kind: "inventory-end", count: 7 });
  });

  it("parses a PCI function with its BARs", () => {
    const msg = parseControlLine("BH1 pci 0000:00:1e.0 8086:7010 0x010180 10 io:0x1f0+0x8,io:0x3f6+0x1,none:0x0+0x0,mem:0xe0000000+0x200000");
    expect(msg).toEqual({
      kind: "pci",
      fn: {
        bdf: "0000:00:1e.0",
        vendor: 0x8086,
        device: 0x7010,
        classCode: 0x010180,
        irq: 10,
        bars: [
          { kind: "io", start: 0x1f0, size: 8 },
          { kind: "io", start: 0x3f6, size: 1 },
          { kind: "mem", start: 0xe0000000, size: 0x200000 },
        ],
      },
    });
  });

  it.each([
    ["no tag", "hello app", "missing BH1 tag"],
    ["wrong tag", "BH2 hello app", "missing BH1 tag"],
    ["unknown kind", "BH1 launch missiles", 'unknown kind "launch"'],
    ["bad role", "BH1 hello ../../etc", "bad hello"],
    ["non-numeric pong", "BH1 pong abc", "bad pong"],
    ["huge pong", "BH1 pong 99999999999", "bad pong"],
    ["out with bad base64", "BH1 out 1 $$$", "bad out"],
    ["exit without status", "BH1 exit 1", "bad exit"],
    ["pci with too few fields", "BH1 pci 0000:00:1e.0 8086:7010", "bad pci"],
    ["pci with a bad address", "BH1 pci 00:1e 8086:7010 0x010180 10 -", "bad pci address"],
    ["pci with a vendor out of range", "BH1 pci 0000:00:1e.0 18086:7010 0x010180 10 -", "bad pci fields"],
    ["pci with bad BARs", "BH1 pci 0000:00:1e.0 8086:7010 0x010180 10 io:zz", "bad pci fields"],
    ["inventory-end out of range", "BH1 inventory-end 100000", "bad inventory-end"],
  ])("refuses %s", (_name, line, reason) => {
    expect(parseControlLine(line)).toMatchObject({ kind: "invalid", reason });
  });

  it("truncates what it echoes of a refused line", () => {
    const r = parseControlLine("x".repeat(10_000));
    expect(r.kind).toBe("invalid");
    expect((r as { line: string }).line.length).toBeLessThanOrEqual(200);
  });
});
