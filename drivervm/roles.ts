// The driver VMs' machines. Each gets only the physical device the device
// manager assigns it (the disk VM the IDE controller, the net VM the
// NE2000, the PCI VM every function's config space with no driver bound),
// and its command line keeps every other built-in driver from binding.
import { baseCmdline, blacklist, DRIVER_INITCALL as D, type RoleConfig } from "../hypervisor/vm/spec.js";

export const DRIVER_ROLES = ["disk", "net", "pci"] as const;
export type DriverRole = (typeof DRIVER_ROLES)[number];

export const DRIVER_VMS: Record<DriverRole, RoleConfig> = {
  disk: { role: "disk", memoryMiB: 80, cmdline: baseCmdline([blacklist(D.ne2kPci, D.virtioNet, D.virtioBlk)]) },
  net: { role: "net", memoryMiB: 80, cmdline: baseCmdline([blacklist(D.ataPiix, D.virtioNet, D.virtioBlk)]) },
  pci: { role: "pci", memoryMiB: 80, cmdline: baseCmdline([blacklist(D.ataPiix, D.ne2kPci, D.virtioNet, D.virtioBlk)]) },
};
