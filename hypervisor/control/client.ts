// Talks to a running setup through its control API.
import { readFileSync, rmSync } from "node:fs";
import WebSocket from "ws";
import { endpointFile } from "./server.js";
import { processAlive } from "../process-alive.js";
import type { ControlEndpoint, ControlResponse } from "./protocol.js";

export class NoSetupError extends Error {
  override readonly name = "NoSetupError";
}


/** The endpoint of the setup running from this run folder, if one runs. */
export function findEndpoint(runDir: string): ControlEndpoint | undefined {
  const file = endpointFile(runDir);
  let ep: ControlEndpoint;
  try {
    ep = JSON.parse(readFileSync(file, "utf8")) as ControlEndpoint;
  } catch {
    return undefined;
  }
  if (typeof ep.pid !== "number" || typeof ep.port !== "number" || !processAlive(ep.pid)) {
    rmSync(file, { force: true }); // left behind by a setup that died
    return undefined;
  }
  return ep;
}

export class ControlClient {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data) => {
      let r: ControlResponse;
      try {
        r = JSON.parse(data.toString()) as ControlResponse;
      } catch {
        return;
      }
      const w = this.waiting.get(r.id);
      if (!w) return;
      this.waiting.delete(r.id);
      if (r.ok) w.resolve(r.result);
      else w.reject(new Error(r.error));
    });
    ws.on("close", () => {
      for (const w of this.waiting.values()) w.reject(new Error("the setup closed the control connection"));
      this.waiting.clear();
    });
  }

  static async connect(runDir: string): Promise<ControlClient> {
    const ep = findEndpoint(runDir);
    if (!ep) throw new NoSetupError(`no Bulkhead setup is running (nothing in ${endpointFile(runDir)}); start one with \`bulkhead up\``);
    const ws = new WebSocket(`ws://127.0.0.1:${ep.port}/?token=${ep.token}`);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", (err) => reject(new NoSetupError(`cannot reach the setup (pid ${ep.pid}, port ${ep.port}): ${err.message}`)));
    });
    return new ControlClient(ws);
  }

  request<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.ws.send(JSON.stringify({ id, op, ...args }));
    });
  }

  close(): void {
    this.ws.close();
  }
}
