import { describe, expect, it } from "vitest";
import { CapabilitySpace } from "../../../dist/hypervisor/kernel/capability.js";
import { DeviceManager } from "../../../dist/hypervisor/devices/manager.js";
import { PCI_SLOT } from "../../../dist/hypervisor/vm/spec.js";

const base = (role: string) => ({ role, memoryMiB: 80, cmdline: "console=ttyS0" });

describe("capabilities and the device manager", () => {
  it("gives each driver VM only its assigned device", () => {
    const caps = new CapabilitySpace();
    const dm = new DeviceManager(caps);
    const ids = { app: 1, disk: 2, net: 3, pci: 4 } as const;
    for (const [role, id] of Object.entries(ids)) dm.grantFor(id, role);

    expect(dm.machineFor(ids.app, base("app"))).toMatchObject({ nic: "none", removePciSlots: [PCI_SLOT.ide] });
    expect(dm.machineFor(ids.disk, base("disk"))).toMatchObject({ nic: "none", removePciSlots: [] });
    expect(dm.machineFor(ids.net, base("net"))).toMatchObject({ nic: "ne2k", removePciSlots: [PCI_SLOT.ide] });
    expect(dm.machineFor(ids.pci, base("pci"))).toMatchObject({ nic: "ne2k", removePciSlots: [] });
    expect(caps.ownerOf("ide")).toBe(ids.disk);
    expect(caps.ownerOf("ne2k")).toBe(ids.net);
  });

  it("takes everything back on revocation", () => {
    const caps = new CapabilitySpace();
    const dm = new DeviceManager(caps);
    dm.grantFor(7, "disk");
    caps.revokeAll(7);
    expect(caps.holds(7, { kind: "device", device: "ide" })).toBe(false);
    expect(dm.machineFor(7, base("disk"))).toMatchObject({ removePciSlots: [PCI_SLOT.ide] });
  });
});
