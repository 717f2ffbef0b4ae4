// The application VM: no physical disk or NIC in its machine, no disk or
// NIC driver bound. Its devices are paravirtual and served by driver VMs.
import { PCI_SLOT, baseCmdline, blacklist, DRIVER_INITCALL, type MachineConfig } from "../hypervisor/vm/spec.js";

export const appVm: MachineConfig = {
  role: "app",
  memoryMiB: 128,
  nic: "none",
  // v86 always builds an IDE controller: take it off the bus.
  removePciSlots: [PCI_SLOT.ide],
  cmdline: baseCmdline([blacklist(DRIVER_INITCALL.ataPiix, DRIVER_INITCALL.ne2kPci)]),
};
