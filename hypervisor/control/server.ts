// The control API of a running setup: a WebSocket server on loopback, with
// a token in a file only the owner can read, so a second terminal can see
// and steer the setup started in the first.
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { WebSocketServer, type WebSocket } from "ws";
import type { Hypervisor } from "../hypervisor.js";
import { parseRequest, type ControlEndpoint, type ControlRequest, type ControlResponse } from "./protocol.js";

export function endpointFile(runDir: string): string {
  return join(runDir, "control.json");
}

export class ControlServer {
  private wss: WebSocketServer | undefined;
  private readonly token = randomBytes(16).toString("hex");

  constructor(
    private readonly hv: Hypervisor,
    private readonly onDown: () => void,
  ) {}

  async listen(): Promise<number> {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: 64 * 1024 });
    this.wss = wss;
    await new Promise<void>((resolve, reject) => wss.once("listening", resolve).once("error", reject));
    const port = (wss.address() as { port: number }).port;
    wss.on("connection", (ws, req) => {
      const url = new URL(req.url ?? "/", "http://localhost");
      if (url.searchParams.get("token") !== this.token) {
        ws.close(4001, "bad token");
        return;
      }
      ws.on("message", (data) => void this.handle(ws, data.toString()));
    });
    mkdirSync(this.hv.runDir, { recursive: true });
    const endpoint: ControlEndpoint = { pid: process.pid, port, token: this.token, started: new Date().toISOString() };
    writeFileSync(endpointFile(this.hv.runDir), JSON.stringify(endpoint) + "\n", { mode: 0o600 });
    return port;
  }

  private async handle(ws: WebSocket, text: string): Promise<void> {
    const req = parseRequest(text);
    const reply = (r: ControlResponse) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(r));
    if ("error" in req) return void reply({ id: req.id, ok: false, error: req.error });
    try {
      reply({ id: req.id, ok: true, result: await this.perform(req) });
    } catch (err) {
      reply({ id: req.id, ok: false, error: (err as Error).message });
    }
  }

  private async perform(req: ControlRequest): Promise<unknown> {
    switch (req.op) {
      case "status":
        return await this.hv.status();
      case "down":
        setImmediate(this.onDown);
        return { stopping: true };
      case "exec": {
        const r = await this.hv.vm("app").exec(req.command, req.timeoutMs);
        return { status: r.status, output: r.output.toString("base64") };
      }
      case "reboot":
        await this.hv.restartVm(req.vm);
        return { state: this.hv.vm(req.vm).state };
      case "crash":
        await this.hv.injectFault(req.vm, req.fault);
        return { injected: req.fault, vm: req.vm };
      case "events":
        return this.hv.events.list();
    }
  }

  async close(): Promise<void> {
    try {
      const mine = JSON.parse(readFileSync(endpointFile(this.hv.runDir), "utf8")) as ControlEndpoint;
      if (mine.token === this.token) rmSync(endpointFile(this.hv.runDir), { force: true });
    } catch {
      // already gone
    }
    for (const c of this.wss?.clients ?? []) c.terminate();
    await new Promise<void>((resolve) => (this.wss ? this.wss.close(() => resolve()) : resolve()));
  }
}
