// The device manager: the machine's physical devices, which driver VM owns
// each, and the PCI inventory the PCI VM's Linux driver enumerated. It
// grants capabilities through the kernel and shapes each task's machine
// from what the task holds: only the assigned driver VM gets a device.
import type { CapabilitySpace, PhysicalDevice } from "../kernel/capability.js";
import type { PciFunction } from "../vm/control-message.js";
import { PCI_SLOT, type MachineConfig, type NicModel } from "../vm/spec.js";

export interface PhysicalDeviceInfo {
  name: PhysicalDevice;
  description: string;
  slot: number;
  /** vendor:device as the PCI VM should report it. */
  vendor: number;
  device: number;
}

export const PHYSICAL_DEVICES: PhysicalDeviceInfo[] = [
  { name: "ide", description: "Intel PIIX3 IDE controller", slot: PCI_SLOT.ide, vendor: 0x8086, device: 0x7010 },
  { name: "ne2k", description: "Realtek RTL-8029 (NE2000) Ethernet", slot: PCI_SLOT.ne2k, vendor: 0x10ec, device: 0x8029 },
];

/** Which role owns which device. */
export const ASSIGNMENT: Record<PhysicalDevice, string> = { ide: "disk", ne2k: "net" };

export interface Inventory {
  reportedAt: string;
  functions: PciFunction[];
}

export class DeviceManager {
  inventory: Inventory | undefined;

  constructor(private readonly caps: CapabilitySpace) {}

  /** Grants a new task what its role is assigned. */
  grantFor(task: number, role: string): void {
    for (const dev of PHYSICAL_DEVICES) if (ASSIGNMENT[dev.name] === role) this.caps.grant(task, { kind: "device", device: dev.name });
    if (role === "pci") this.caps.grant(task, { kind: "pci-config" });
    // The disk VM serves the block service, the net VM the net service; the app VM is their client.
    if (role === "disk") this.caps.grant(task, { kind: "service", service: "block", side: "server" });
    if (role === "net") this.caps.grant(task, { kind: "service", service: "net", side: "server" });
    if (role === "app") {
      this.caps.grant(task, { kind: "service", service: "block", side: "client" });
      this.caps.grant(task, { kind: "service", service: "net", side: "client" });
    }
  }

  /**
   * The machine a task gets: the role's base config with physical devices
   * plugged in only where a capability allows it.
   */
  machineFor(task: number, base: Omit<MachineConfig, "nic" | "removePciSlots">): MachineConfig {
    const sees = (device: PhysicalDevice) =>
      this.caps.holds(task, { kind: "device", device }) || this.caps.holds(task, { kind: "pci-config" });
    const nic: NicModel = sees("ne2k") ? "ne2k" : "none";
    const removePciSlots = sees("ide") ? [] : [PCI_SLOT.ide];
    return { role: base.role, memoryMiB: base.memoryMiB, cmdline: base.cmdline, nic, removePciSlots };
  }

  recordInventory(functions: PciFunction[]): void {
    this.inventory = { reportedAt: new Date().toISOString(), functions };
  }

  /** Physical devices found in the inventory, with their owner. */
  devices(): Array<PhysicalDeviceInfo & { owner: string; found: PciFunction | undefined }> {
    return PHYSICAL_DEVICES.map((d) => ({
      ...d,
      owner: ASSIGNMENT[d.name],
      found: this.inventory?.functions.find((f) => f.vendor === d.vendor && f.device === d.device),
    }));
  }
}
