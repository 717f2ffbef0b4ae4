// The control API's messages (JSON over a WebSocket on loopback).
// Requests come from other processes: parsed and checked here.

export type ControlRequest =
  | { id: number; op: "status" }
  | { id: number; op: "down" }
  | { id: number; op: "exec"; command: string; timeoutMs: number }
  | { id: number; op: "reboot"; vm: string }
  | { id: number; op: "crash"; vm: string; fault: InjectedFault }
  | { id: number; op: "events" };

/** Faults `bulkhead crash` injects for real into a driver VM. */
export const INJECTED_FAULTS = ["panic", "flip", "hang", "reset", "kill", "garbage"] as const;
export type InjectedFault = (typeof INJECTED_FAULTS)[number];

export type ControlResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** The file a running setup leaves in its run folder so others can find it. */
export interface ControlEndpoint {
  pid: number;
  port: number;
  token: string;
  started: string;
}

export function parseRequest(text: string): ControlRequest | { error: string; id: number } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { error: "request is not JSON", id: 0 };
  }
  if (typeof v !== "object" || v === null) return { error: "request is not an object", id: 0 };
  const r = v as Record<string, unknown>;
  const id = typeof r.id === "number" && Number.isInteger(r.id) ? r.id : 0;
  switch (r.op) {
    case "status":
    case "down":
    case "events":
      return { id, op: r.op };
    case "exec":
      if (typeof r.command !== "string" || r.command.length === 0 || r.command.length > 4000) return { error: "exec needs a command (1-4000 chars)", id };
      return { id, op: "exec", command: r.command, timeoutMs: typeof r.timeoutMs === "number" && r.timeoutMs > 0 ? Math.min(r.timeoutMs, 3_600_000) : 60_000 };
    case "reboot":
      if (typeof r.vm !== "string") return { error: `${r.op} needs a vm`, id };
      return { id, op: r.op, vm: r.vm };
    case "crash":
      if (typeof r.vm !== "string") return { error: "crash needs a vm", id };
      if (!INJECTED_FAULTS.includes(r.fault as InjectedFault)) return { error: `crash needs a fault: ${INJECTED_FAULTS.join(", ")}`, id };
      return { id, op: "crash", vm: r.vm, fault: r.fault as InjectedFault };
    default:
      return { error: `unknown op ${JSON.stringify(r.op)}`, id };
  }
}
