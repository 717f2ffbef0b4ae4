// The wire behind the net VM's NIC: slirp-wire spoken to with raw frames.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createSocket } from "node:dgram";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { until, within } from "./waiting.js";
import { buildHostTools } from "../../../dist/images/host-tools.js";
import { cacheDir, projectRoot } from "../../../dist/images/paths.js";
import {
  BROADCAST_MAC,
  GATEWAY_IP,
  GATEWAY_MAC,
  GUEST_IP,
  GUEST_MAC,
  PROTO_UDP,
  TH,
  WireClient,
  arpWhoHas,
  dhcpDiscoverFrame,
  dhcpOptions,
  icmpEchoFrame,
  lengthPrefix,
  tcpFrame,
  udpFrame,
  windowScaleOption,
  type Parsed,
} from "./frames.js";

interface Counters {
  to_slirp_frames: number;
  to_client_frames: number;
  dropped_malformed: number;
  dropped_no_client: number;
  held: number;
  dropped_would_block: number;
  refused_by_policy: number;
  clients: number;
}

interface Wire {
  path: string;
  proc: ChildProcess;
  stderr: () => string;
  /** SIGTERM; resolves with the exit code and the counters printed at exit. */
  stop: () => Promise<{ code: number | null; counters: Counters }>;
}

let bin = "";
const cleanup: Array<() => void> = [];

beforeAll(async () => {
  bin = (await buildHostTools(projectRoot(), cacheDir(), (msg) => process.stderr.write(`[host-tools] ${msg}\n`))).slirpWire;
});

afterEach(() => {
  for (const f of cleanup.splice(0)) f();
});

const lastCounters = (text: string): Counters => {
  const line = text.split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`no counters in: ${text}`);
  return JSON.parse(line) as Counters;
};

async function startWire(...args: string[]): Promise<Wire> {
  const dir = mkdtempSync(join(tmpdir(), "bh-wire-"));
  const path = join(dir, "wire.sock");
  const proc = spawn(bin, ["--socket", path, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  cleanup.push(() => {
    if (proc.exitCode === null) proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const ready = new Promise<void>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (c: Buffer) => {
      out += c.toString();
      if (out === "ready\n") resolve();
    });
    void exited.then((code) => reject(new Error(`slirp-wire exited (${code}) before ready: ${stderr}`)));
  });
  await within("slirp-wire to be ready", ready, 5000);
  return {
    path,
    proc,
    stderr: () => stderr,
    stop: async () => {
      proc.kill("SIGTERM");
      const code = await within("slirp-wire to exit", exited);
      return { code, counters: lastCounters(stderr) };
    },
  };
}

async function client(wire: Wire): Promise<WireClient> {
  const c = await WireClient.connect(wire.path);
  cleanup.push(() => c.close());
  return c;
}

/** A TCP server on host 127.0.0.1, which the guest reaches as 10.0.2.2. */
async function hostServer(): Promise<{ port: number; connections: Socket[]; server: Server }> {
  const connections: Socket[] = [];
  const server = createServer((s) => {
    connections.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanup.push(() => {
    for (const s of connections) s.destroy();
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, connections, server };
}

/** A port on 127.0.0.1 that nobody listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const isTcpFromAddr = (addr: string, port: number) => (p: Parsed) => p.tcp?.sport === port && p.ip?.src === addr;
const isTcpFrom = (port: number) => isTcpFromAddr(GATEWAY_IP, port);
const randomSeq = () => Math.floor(Math.random() * 0xffffffff);

/** A connection from a guest that asks for window scale SCALE (7 by default), through a fresh wire to a host service, up to the SYN-ACK. */
async function scaledHandshake(sport: number, scale = 7) {
  const srv = await hostServer();
  const wire = await startWire();
  const c = await client(wire);
  await c.announce();
  const seq = randomSeq();
  c.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq, flags: TH.SYN, options: windowScaleOption(scale) }));
  const synAck = await c.next("SYN-ACK", isTcpFrom(srv.port));
  return { srv, c, seq, synAck };
}

/**
 * A scaled connection (a window of 8192 << SCALE, 1 MiB by default, so only
 * slirp's congestion window limits it) on which the host service sends BYTES. `round()` takes what
 * slirp sends until it stops and returns how much that was; `ackAll()`
 * acknowledges everything taken, and `ack(n)` the first n bytes.
 */
async function bulkFlow(sport: number, bytes: number, scale = 7) {
  const { srv, c, seq, synAck } = await scaledHandshake(sport, scale);
  const base = (synAck.tcp!.seq + 1) >>> 0;
  const ack = (n: number) => c.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq: seq + 1, ack: (base + n) >>> 0, flags: TH.ACK, window: 8192 }));
  ack(0);
  await until("the host service to see the connection", () => srv.connections.length === 1);
  srv.connections[0].write(Buffer.alloc(bytes, 3));
  let received = 0;
  const round = async () => {
    const from = received;
    await takeData(c, srv.port, base, 300, (end) => {
      if (end > received) received = end;
    });
    return received - from;
  };
  return { ack, round, ackAll: () => ack(received), received: () => received };
}

/** Takes slirp's data segments from PORT until none comes for QUIET_MS; EACH gets every one's end, counted from BASE. */
async function takeData(c: WireClient, port: number, base: number, quietMs: number, each: (end: number) => void): Promise<void> {
  for (;;) {
    let p: Parsed;
    try {
      p = await within("more data", c.next("data", (q) => isTcpFrom(port)(q) && q.tcp!.payload.length > 0), quietMs);
    } catch {
      return;
    }
    each((p.tcp!.seq - base + p.tcp!.payload.length) >>> 0);
  }
}

describe("slirp-wire", () => {
  it("offers 10.0.2.15 with router 10.0.2.2 over DHCP", async () => {
    const wire = await startWire();
    const c = await client(wire);
    const xid = 0x1234abcd;
    c.send(dhcpDiscoverFrame(xid));
    const offer = await c.next("DHCP OFFER", (p) => p.udp?.sport === 67 && p.udp.dport === 68 && p.udp.payload.readUInt32BE(4) === xid);
    const bootp = offer.udp!.payload;
    expect(bootp[0]).toBe(2); // BOOTREPLY
    expect([...bootp.subarray(16, 20)].join(".")).toBe(GUEST_IP); // yiaddr
    const opts = dhcpOptions(bootp);
    expect(opts.get(53)?.[0]).toBe(2); // OFFER
    expect([...(opts.get(3) ?? [])].join(".")).toBe(GATEWAY_IP);
    expect([...(opts.get(6) ?? [])].join(".")).toBe("10.0.2.3");
    expect(offer.ip!.checksumOk).toBe(true);
  });

  it("answers ARP for the gateway and ICMP echo to it", async () => {
    const wire = await startWire();
    const c = await client(wire);
    c.send(arpWhoHas(GATEWAY_IP));
    const reply = await c.next("ARP reply", (p) => p.arp?.op === 2);
    expect(reply.arp).toMatchObject({ senderIp: GATEWAY_IP, senderMac: GATEWAY_MAC, targetIp: GUEST_IP, targetMac: GUEST_MAC });
    expect(reply.dst).toBe(GUEST_MAC);

    c.send(icmpEchoFrame(GATEWAY_IP, 0x4242, 7, Buffer.from("bulkhead ping")));
    const pong = await c.next("ICMP echo reply", (p) => p.icmp?.type === 0);
    expect(pong.ip!.src).toBe(GATEWAY_IP);
    expect(pong.icmp).toMatchObject({ id: 0x4242, seq: 7 });
    expect(pong.icmp!.payload.toString()).toBe("bulkhead ping");
  });

  it("connects a SYN to 10.0.2.2 through to a service on host 127.0.0.1", async () => {
    const srv = await hostServer();
    const wire = await startWire();
    const c = await client(wire);
    await c.announce();
    const seq = randomSeq();
    c.send(tcpFrame(GATEWAY_IP, { sport: 40001, dport: srv.port, seq, flags: TH.SYN }));
    const synAck = await c.next("SYN-ACK", isTcpFrom(srv.port));
    expect(synAck.tcp!.flags & (TH.SYN | TH.ACK | TH.RST)).toBe(TH.SYN | TH.ACK);
    expect(synAck.tcp!.ack).toBe((seq + 1) >>> 0);
    expect(synAck.tcp!.dport).toBe(40001);
    expect(synAck.tcp!.checksumOk).toBe(true);
    await until("the host service to see the connection", () => srv.connections.length === 1);
  });

  it("scales its TCP window when the guest asks (our libslirp patch), and so keeps more than 64 KiB in flight", async () => {
    const inFlight: Record<string, number> = {};
    for (const scaled of [false, true]) {
      const srv = await hostServer();
      const wire = await startWire();
      const c = await client(wire);
      await c.announce();
      const sport = scaled ? 40021 : 40020;
      const seq = randomSeq();
      c.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq, flags: TH.SYN, options: scaled ? windowScaleOption(7) : undefined }));
      const synAck = await c.next("SYN-ACK", isTcpFrom(srv.port));
      // slirp offers scaling only to a guest that asked for it.
      if (scaled) expect(synAck.tcp!.windowScale).toBeGreaterThan(0);
      else expect(synAck.tcp!.windowScale).toBeUndefined();
      const base = (synAck.tcp!.seq + 1) >>> 0;
      // Our window: 8192 << 7 = 1 MiB when scaled, else the 64 KiB an unscaled window allows.
      const window = scaled ? 8192 : 65535;
      const ack = (n: number) => c.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq: seq + 1, ack: (base + n) >>> 0, flags: TH.ACK, window }));
      ack(0);
      await until("the host service to see the connection", () => srv.connections.length === 1);
      srv.connections[0].write(Buffer.alloc(2 << 20, 7));
      // Acknowledge the first 512 KiB as it comes (slirp's congestion window opens), then nothing:
      // what still comes is what slirp keeps unacknowledged.
      let received = 0;
      let acked = 0;
      await takeData(c, srv.port, base, 500, (end) => {
        if (end > received) received = end;
        if (acked < 512 << 10) ack((acked = received));
      });
      inFlight[scaled ? "scaled" : "unscaled"] = received - acked;
    }
    expect(inFlight.unscaled).toBeLessThanOrEqual(65535);
    expect(inFlight.scaled).toBeGreaterThan(65535);
  });

  it("scales the window of the ACK that completes the handshake, too", async () => {
    const sport = 40022;
    const { srv, c, seq, synAck } = await scaledHandshake(sport);
    // A raw window of 4, scaled by 2^7: 512 bytes. Read unscaled, slirp would send 4 at a time.
    c.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq: seq + 1, ack: (synAck.tcp!.seq + 1) >>> 0, flags: TH.ACK, window: 4 }));
    await until("the host service to see the connection", () => srv.connections.length === 1);
    srv.connections[0].write(Buffer.alloc(10_000, 1));
    const data = await c.next("data", (q) => isTcpFrom(srv.port)(q) && q.tcp!.payload.length > 0);
    expect(data.tcp!.payload.length).toBe(512);
  });

  it("opens its congestion window by the bytes a lumped ACK covers, not by one segment per ACK (our libslirp patch)", async () => {
    const flow = await bulkFlow(40023, 4 << 20);
    // Each round: take what slirp sends until it stops (its congestion window is full), then
    // acknowledge all of it with one ACK, as a guest does behind the front end's coalescing.
    // Counting ACKs, the window grows by one segment a round (1, 2, 3, ... segments);
    // counting bytes, it doubles (1, 2, 4, ...).
    const sent: number[] = [];
    for (let round = 0; round < 6; round++) {
      sent.push(await flow.round());
      flow.ackAll();
    }
    expect(sent[0]).toBeGreaterThan(0);
    // Byte counting: 32 times the first round; ACK counting: 3.5 times (measured with the patch left out).
    expect(sent[5]).toBeGreaterThanOrEqual(16 * sent[0]);
  });

  it("keeps up to its 1 MiB send buffer in flight on one connection (our libslirp patch)", async () => {
    // A 4 MiB window: the guest's side is never the limit. Each round doubles slirp's
    // congestion window until the send buffer (what slirp read from the host and the guest
    // has not acknowledged) caps it: 128 KiB in Debian's build, then 512 KiB; 1 MiB keeps
    // the net VM busy while a flight's acknowledgments come back (docs/benchmarks.md).
    const flow = await bulkFlow(40025, 16 << 20, 9);
    const sent: number[] = [];
    for (let round = 0; round < 16; round++) {
      sent.push(await flow.round());
      flow.ackAll();
      // Stop once the window has stopped growing at the cap (a slow host may split a round in two).
      if (Math.max(...sent) > 768 << 10 && sent[round] <= sent[round - 1]) break;
    }
    const most = Math.max(...sent);
    expect(most).toBeGreaterThan(768 << 10);
    expect(most).toBeLessThanOrEqual((1 << 20) + 1460);
  });

  it("still halves its congestion window after fast recovery, bytes counted or not", async () => {
    const { ack, round, ackAll, received } = await bulkFlow(40024, 8 << 20);
    // Slow start with lumped ACKs up to a window of about 64 segments.
    for (let r = 0; r < 6; r++) {
      await round();
      ackAll();
    }
    const lostAt = received();
    const window = await round();
    // The round's first segment was lost: duplicate ACKs, the retransmission, then an ACK for all.
    for (let i = 0; i < 5; i++) ack(lostAt);
    await round();
    ackAll();
    const after = await round();
    expect(window).toBeGreaterThan(32 * 1400);
    // Halved (about 32 segments); a window that counted the recovery's ACK as growth went on at 1.5 times (95).
    expect(after).toBeGreaterThan(0);
    expect(after).toBeLessThanOrEqual(0.6 * window);
  });

  it("refuses ports outside --allow-ports with its own RST, and passes the allowed ones", async () => {
    const denied = await hostServer();
    const allowed = await hostServer();
    const wire = await startWire("--allow-ports", `1,${allowed.port}`);
    const c = await client(wire);
    await c.announce();

    const seq = randomSeq();
    c.send(tcpFrame(GATEWAY_IP, { sport: 40002, dport: denied.port, seq, flags: TH.SYN }));
    const rst = await c.next("RST from the port policy", isTcpFrom(denied.port), 1000);
    expect(rst.tcp).toMatchObject({ dport: 40002, seq: 0, ack: (seq + 1) >>> 0, flags: TH.RST | TH.ACK, checksumOk: true });
    expect(rst.ip).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP, checksumOk: true });
    expect(rst.src).toBe(GATEWAY_MAC);
    expect(rst.dst).toBe(GUEST_MAC);

    // slirp connects to any address the guest names: host loopback is the host too.
    c.send(tcpFrame("127.0.0.1", { sport: 40012, dport: denied.port, seq, flags: TH.SYN }));
    const rst2 = await c.next("RST for host loopback named directly", isTcpFromAddr("127.0.0.1", denied.port), 1000);
    expect(rst2.tcp).toMatchObject({ dport: 40012, ack: (seq + 1) >>> 0, flags: TH.RST | TH.ACK, checksumOk: true });

    c.send(udpFrame(GATEWAY_MAC, GUEST_IP, GATEWAY_IP, 40003, denied.port, Buffer.from("dropped")));
    c.send(udpFrame(BROADCAST_MAC, GUEST_IP, "255.255.255.255", 40003, denied.port, Buffer.from("dropped")));
    // DHCP is slirp's own, whichever way it is sent.
    c.send(dhcpDiscoverFrame(7));
    await c.next("DHCP OFFER to a broadcast", (p) => p.udp?.dport === 68 && p.udp.payload.readUInt32BE(4) === 7);
    c.send(dhcpDiscoverFrame(8, GATEWAY_IP));
    await c.next("DHCP OFFER to a unicast", (p) => p.udp?.dport === 68 && p.udp.payload.readUInt32BE(4) === 8);
    c.send(tcpFrame(GATEWAY_IP, { sport: 40004, dport: allowed.port, seq, flags: TH.SYN }));
    const synAck = await c.next("SYN-ACK on the allowed port", isTcpFrom(allowed.port));
    expect(synAck.tcp!.flags & (TH.SYN | TH.ACK | TH.RST)).toBe(TH.SYN | TH.ACK);
    await until("the allowed service to see the connection", () => allowed.connections.length === 1);

    const { code, counters } = await wire.stop();
    expect(code).toBe(0);
    expect(counters.refused_by_policy).toBe(4);
    expect(denied.connections.length).toBe(0);
    expect(c.received.filter((p) => p.ip?.proto === PROTO_UDP && p.udp?.sport !== 67)).toEqual([]);
  });

  it("lets slirp answer a SYN to a closed host port with a RST, promptly", async () => {
    const port = await closedPort();
    const wire = await startWire();
    const c = await client(wire);
    await c.announce();
    const seq = randomSeq();
    const t0 = Date.now();
    c.send(tcpFrame(GATEWAY_IP, { sport: 40005, dport: port, seq, flags: TH.SYN }));
    const rst = await c.next("RST for a closed port", isTcpFrom(port), 2000);
    expect(rst.tcp!.flags & TH.RST).toBe(TH.RST);
    expect(rst.tcp!.ack).toBe((seq + 1) >>> 0);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it("skips runt and oversized frames and serves the next one; closes on a broken length", async () => {
    const wire = await startWire();
    const c = await client(wire);
    c.sendRaw(Buffer.concat([lengthPrefix(5), Buffer.alloc(5, 0xee)]));
    c.sendRaw(Buffer.concat([lengthPrefix(3000), Buffer.alloc(3000, 0xee)]));
    // The valid frame in two pieces, to cross a read boundary.
    const arp = Buffer.concat([lengthPrefix(42), arpWhoHas(GATEWAY_IP)]);
    c.sendRaw(arp.subarray(0, 7));
    await new Promise((r) => setTimeout(r, 50));
    c.sendRaw(arp.subarray(7));
    await c.next("ARP reply after the bad frames", (p) => p.arp?.op === 2);

    c.sendRaw(lengthPrefix(0x00100000));
    await within("the wire to hang up on a broken stream", c.closed);
    const c2 = await client(wire);
    c2.send(arpWhoHas(GATEWAY_IP));
    await c2.next("ARP reply on a new connection", (p) => p.arp?.op === 2);

    const { counters } = await wire.stop();
    expect(counters.dropped_malformed).toBe(2);
    expect(wire.stderr()).toMatch(/frame length 1048576 from client/);
  });

  it("lets a new client replace the old one, keeping slirp's TCP connections", async () => {
    const srv = await hostServer();
    const wire = await startWire();
    const c1 = await client(wire);
    await c1.announce();
    const seq = randomSeq();
    const sport = 40006;
    c1.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq, flags: TH.SYN }));
    const synAck = await c1.next("SYN-ACK", isTcpFrom(srv.port));
    const ack = (synAck.tcp!.seq + 1) >>> 0;
    c1.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq: seq + 1, ack, flags: TH.ACK | TH.PSH, payload: Buffer.from("hello ") }));
    await until("the host service to see the connection", () => srv.connections.length === 1);
    let got = "";
    srv.connections[0].on("data", (d: Buffer) => (got += d.toString()));
    await until("the first bytes", () => got === "hello ");

    // A frame for the guest while nobody is plugged in waits for the next client.
    c1.close();
    await within("the first client to close", c1.closed);
    await new Promise((r) => setTimeout(r, 50));
    srv.connections[0].write("lost");
    await new Promise((r) => setTimeout(r, 100));

    // The next machine's NIC, mid-connection, and then a third that replaces it.
    const c2 = await client(wire);
    const held = await c2.next("the frame held while no client was plugged in", (p) => isTcpFrom(srv.port)(p) && p.tcp!.payload.toString() === "lost");
    expect(held.tcp!.checksumOk).toBe(true);
    c2.send(tcpFrame(GATEWAY_IP, { sport, dport: srv.port, seq: seq + 7, ack, flags: TH.ACK | TH.PSH, payload: Buffer.from("world") }));
    await until("the bytes sent after the client change", () => got === "hello world");
    const c3 = await client(wire);
    await within("the wire to hang up on the replaced client", c2.closed);
    c3.send(arpWhoHas(GATEWAY_IP));
    await c3.next("ARP reply on the replacing client", (p) => p.arp?.op === 2);

    const { counters } = await wire.stop();
    expect(counters.clients).toBe(3);
    expect(counters.held).toBeGreaterThanOrEqual(1);
  });

  it("drops frames whole when the client stops reading, and the stream stays in step", async () => {
    // A host UDP service that answers one datagram with a flood: no flow
    // control between it and the wire, so the client's socket must fill up.
    const DATAGRAMS = 20000;
    const udp = createSocket("udp4");
    let open = true;
    cleanup.push(() => {
      open = false;
      udp.close();
    });
    udp.on("message", (_msg, from) => {
      let i = 0;
      const burst = () => {
        if (!open) return;
        for (let k = 0; k < 50 && i < DATAGRAMS; k++, i++) {
          const d = Buffer.alloc(1400, i & 0xff);
          d.writeUInt32BE(i, 0);
          udp.send(d, from.port, from.address);
        }
        if (i < DATAGRAMS) setTimeout(burst, 1);
      };
      burst();
    });
    await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
    const port = udp.address().port;

    const wire = await startWire();
    const c = await client(wire);
    await c.announce();
    c.socket.pause();
    c.send(udpFrame(GATEWAY_MAC, GUEST_IP, GATEWAY_IP, 40010, port, Buffer.from("flood me")));
    let counters: Counters | undefined;
    await until(
      "frames dropped for a full socket",
      () => {
        wire.proc.kill("SIGUSR1");
        counters = wire.stderr().includes("{") ? lastCounters(wire.stderr()) : undefined;
        return (counters?.dropped_would_block ?? 0) > 0;
      },
      5000,
    );
    c.socket.resume();
    const { counters: final } = await wire.stop();
    await within("the wire to hang up at exit", c.closed);

    expect(c.errors).toEqual([]);
    expect(c.framesSeen).toBe(final.to_client_frames);
    const got = c.received.filter((p) => p.udp?.sport === port);
    expect(got.length).toBeGreaterThan(100);
    expect(final.dropped_would_block).toBeGreaterThan(0);
    for (const p of got) {
      expect(p.ip!.checksumOk).toBe(true);
      const d = p.udp!.payload;
      const i = d.readUInt32BE(0);
      expect(d.length).toBe(1400);
      expect(d.subarray(4).every((b) => b === (i & 0xff))).toBe(true);
    }
  });

  it("prints counters on SIGUSR1; SIGTERM exits 0 and removes the socket", async () => {
    const wire = await startWire();
    const c = await client(wire);
    c.send(arpWhoHas(GATEWAY_IP));
    await c.next("ARP reply", (p) => p.arp?.op === 2);
    wire.proc.kill("SIGUSR1");
    await until("counters on stderr", () => wire.stderr().includes("{"));
    expect(lastCounters(wire.stderr())).toMatchObject({ to_slirp_frames: 1, to_client_frames: 1, clients: 1 });
    expect(existsSync(wire.path)).toBe(true);
    const { code } = await wire.stop();
    expect(code).toBe(0);
    expect(existsSync(wire.path)).toBe(false);
    await within("the wire to hang up at exit", c.closed);
  });

  it("goes when the process that started it dies, even by SIGKILL, and removes its socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bh-wire-"));
    const path = join(dir, "wire.sock");
    // A shell stands in for the hypervisor: it starts the wire and is then killed outright.
    const parent = spawn("sh", ["-c", `'${bin}' --socket '${path}' --allow-ports all & echo "pid=$!"; wait`], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    parent.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    await until("the wire to start", () => /pid=\d+\n/.test(out) && existsSync(path));
    const wirePid = Number(/pid=(\d+)/.exec(out)![1]);
    const alive = () => {
      try {
        process.kill(wirePid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(alive()).toBe(true);
    parent.kill("SIGKILL");
    await until("the orphaned wire to exit", () => !alive());
    await until("its socket to be removed", () => !existsSync(path));
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses bad arguments with exit 1", async () => {
    const proc = spawn(bin, ["--socket", join(tmpdir(), "bh-wire-bad.sock"), "--allow-ports", "80,http"], { stdio: "ignore" });
    const code = await within("slirp-wire to exit", new Promise((resolve) => proc.on("exit", resolve)));
    expect(code).toBe(1);
  });
});
