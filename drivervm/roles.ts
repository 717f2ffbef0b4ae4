// The driver VMs' machines. Each owns only the device it serves: the disk
// VM the IDE controller, the net VM the NE2000, the PCI VM the machine's
// PCI functions (config space only: no device driver binds there).
import { PCI_SLOT, baseCmdline, blacklist, DRIVER_INITCALL, type MachineConfig } from "../hypervisor/vm/spec.js";

export const DRIVER_ROLES = ["disk", "net", "pci"] as const;
export type DriverRole = (typeof DRIVER_ROLES)[number];

export const diskVm: MachineConfig = {
  role: "disk",
  memoryMiB: 80,
  nic: "none",
  removePciSlots: [],
  cmdline: baseCmdline([blacklist(DRIVER_INITCALL.ne2kPci, DRIVER_INITCALL.virtioNet, DRIVER_INITCALL.virtioBlk)]),
};

export const netVm: MachineConfig = {
  role: "net",
  memoryMiB: 80,
  nic: "ne2k",
  removePciSlots: [PCI_SLOT.ide],
  cmdline: baseCmdline([blacklist(DRIVER_INITCALL.ataPiix, DRIVER_INITCALL.virtioNet, DRIVER_INITCALL.virtioBlk)]),
};

export const pciVm: MachineConfig = {
  role: "pci",
  memoryMiB: 80,
  nic: "ne2k",
  removePciSlots: [],
  cmdline: baseCmdline([
    blacklist(DRIVER_INITCALL.ataPiix, DRIVER_INITCALL.ne2kPci, DRIVER_INITCALL.virtioNet, DRIVER_INITCALL.virtioBlk),
  ]),
};

export const DRIVER_VMS: Record<DriverRole, MachineConfig> = { disk: diskVm, net: netVm, pci: pciVm };
