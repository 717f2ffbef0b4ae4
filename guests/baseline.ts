// The single-VM baseline of the benchmarks: one Linux with the physical
// devices attached directly (the disk image as IDE under ata_piix), no
// driver VMs, no bridge. Its NE2000 is plugged straight into the wire when a
// benchmark gives it one. It is what the overhead is measured against.
import { baseCmdline, blacklist, DRIVER_INITCALL as D, type MachineConfig } from "../hypervisor/vm/spec.js";

export const BASELINE_VM: MachineConfig = {
  role: "baseline",
  memoryMiB: 128,
  nic: "ne2k",
  removePciSlots: [],
  cmdline: baseCmdline([blacklist(D.virtioNet, D.virtioBlk)]),
};

