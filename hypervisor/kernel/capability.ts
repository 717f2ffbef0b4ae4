// Capabilities: the only way a task gets at a physical device or the PCI
// config space. The kernel holds them; the device manager decides grants.

export type PhysicalDevice = "ide" | "ne2k";

export type Capability =
  /** Own a physical device: it is plugged into the holder's machine. */
  | { kind: "device"; device: PhysicalDevice }
  /** See every physical PCI function's config space (the PCI VM). */
  | { kind: "pci-config" }
  /** Be one end of a service's channel: the client (front end) or the server (back end). */
  | { kind: "service"; service: Service; side: "client" | "server" };

/** block: the disk VM serves the app VM's disk; net: the net VM carries its frames. */
export type Service = "block" | "net";
export const SERVICES: readonly Service[] = ["block", "net"];

function same(a: Capability, b: Capability): boolean {
  return describe(a) === describe(b);
}

export function describe(cap: Capability): string {
  switch (cap.kind) {
    case "device":
      return `device:${cap.device}`;
    case "service":
      return `${cap.service}-${cap.side}`;
    default:
      return cap.kind;
  }
}

export class CapabilitySpace {
  private readonly held = new Map<number, Capability[]>();

  grant(task: number, cap: Capability): void {
    const caps = this.held.get(task) ?? [];
    if (!caps.some((c) => same(c, cap))) caps.push(cap);
    this.held.set(task, caps);
  }

  revokeAll(task: number): void {
    this.held.delete(task);
  }

  holds(task: number, cap: Capability): boolean {
    return (this.held.get(task) ?? []).some((c) => same(c, cap));
  }

  /** The task that owns a device exclusively, if any. */
  ownerOf(device: PhysicalDevice): number | undefined {
    for (const [task, caps] of this.held) if (caps.some((c) => c.kind === "device" && c.device === device)) return task;
    return undefined;
  }

  list(task: number): Capability[] {
    return [...(this.held.get(task) ?? [])];
  }
}
