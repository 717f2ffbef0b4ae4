// The single-VM baseline of the benchmarks: one Linux with the physical
// devices attached directly (the disk image as IDE under ata_piix), no
// driver VMs, no bridge. It is what the overhead is measured against.
import { baseCmdline, blacklist, DRIVER_INITCALL as D, type MachineConfig } from "../hypervisor/vm/spec.js";

export const BASELINE_VM: MachineConfig = {
  role: "baseline",
  memoryMiB: 128,
  nic: "none",
  removePciSlots: [],
  cmdline: baseCmdline([blacklist(D.ne2kPci, D.virtioNet, D.virtioBlk)]),
};

