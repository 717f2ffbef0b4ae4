import { describe, expect, it } from "vitest";
import { parseRequest } from "../../../dist/hypervisor/control/protocol.js";

describe("parseRequest (control API)", () => {
  it("accepts the documented operations", () => {
    expect(parseRequest('{"id":1,"op":"status"}')).toEqual({ id: 1, op: "status" });
    expect(parseRequest('{"id":2,"op":"exec","command":"uname -m"}')).toEqual({ id: 2, op: "exec", command: "uname -m", timeoutMs: 60_000 });
    expect(parseRequest('{"id":3,"op":"reboot","vm":"disk"}')).toEqual({ id: 3, op: "reboot", vm: "disk" });
    expect(parseRequest('{"id":4,"op":"crash","vm":"net","fault":"hang"}')).toEqual({ id: 4, op: "crash", vm: "net", fault: "hang" });
    expect(parseRequest('{"id":5,"op":"events"}')).toEqual({ id: 5, op: "events" });
  });

  it.each([
    ["not JSON", "{", "request is not JSON"],
    ["not an object", "3", "request is not an object"],
    ["an unknown op", '{"id":1,"op":"format"}', 'unknown op "format"'],
    ["exec without a command", '{"id":1,"op":"exec"}', "exec needs a command (1-4000 chars)"],
    ["reboot without a vm", '{"id":1,"op":"reboot"}', "reboot needs a vm"],
    ["crash with an unknown fault", '{"id":1,"op":"crash","vm":"disk","fault":"meteor"}', "crash needs a fault: panic, flip, hang, reset, kill, garbage"],
  ])("refuses %s", (_n, text, error) => {
    expect(parseRequest(text)).toMatchObject({ error });
  });

  it("caps an exec timeout at one hour", () => {
    expect(parseRequest('{"id":1,"op":"exec","command":"x","timeoutMs":1e12}')).toMatchObject({ timeoutMs: 3_600_000 });
  });
});
