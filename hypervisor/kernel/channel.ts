// Channels: the kernel sets one up between two tasks only when the client
// holds the service's client capability and the server its server
// capability. A new channel for a service revokes the old one, so nothing
// late from a dead task is ever accepted.
import { createChannel, revokeChannel, type ChannelDescriptor } from "../../bridge/channel.js";
import type { CapabilitySpace, Service } from "./capability.js";

export class CapabilityError extends Error {
  override readonly name = "CapabilityError";
}

interface ChannelRecord {
  service: Service;
  client: number;
  server: number;
  a: ChannelDescriptor;
  b: ChannelDescriptor;
}

const BYTES_PER_DIRECTION: Record<Service, number> = { block: 4 * 2 ** 20, net: 2 ** 20 };

export class ChannelTable {
  private readonly channels = new Map<Service, ChannelRecord>();
  generation = 0;

  constructor(private readonly caps: CapabilitySpace) {}

  /** Sets up a channel for `service`; returns the client's and the server's ends. */
  connect(service: Service, client: number, server: number): { client: ChannelDescriptor; server: ChannelDescriptor } {
    if (!this.caps.holds(client, { kind: "service", service, side: "client" })) throw new CapabilityError(`task ${client} holds no ${service}-client capability`);
    if (!this.caps.holds(server, { kind: "service", service, side: "server" })) throw new CapabilityError(`task ${server} holds no ${service}-server capability`);
    this.revoke(service);
    const { a, b } = createChannel({ bytesPerDirection: BYTES_PER_DIRECTION[service] });
    this.generation++;
    this.channels.set(service, { service, client, server, a, b });
    return { client: a, server: b };
  }

  /** Revokes a service's channel: both ends stop, in-flight messages are dropped. */
  revoke(service: Service): void {
    const rec = this.channels.get(service);
    if (!rec) return;
    revokeChannel(rec.a);
    this.channels.delete(service);
  }

  isConnected(service: Service): boolean {
    return this.channels.has(service);
  }

  /** Services whose channel involves a task. */
  servicesOf(task: number): Service[] {
    return [...this.channels.values()].filter((c) => c.client === task || c.server === task).map((c) => c.service);
  }
}
