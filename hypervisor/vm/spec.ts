// The machine a VM runs: what each role's v86 instance is made of.
export type NicModel = "ne2k" | "none";

/** v86 fixes a device's PCI slot; these are the ones we give away or take off. */
export const PCI_SLOT = { ide: 0x1e, ne2k: 0x05 } as const;

export interface MachineConfig {
  role: string;
  memoryMiB: number;
  nic: NicModel;
  /** PCI slots taken off the bus before the guest runs. */
  removePciSlots: number[];
  /** Kernel command line: console, role-specific driver selection. */
  cmdline: string;
}

/** The command line every guest shares: console on ttyS0, quiet, fast. */
export function baseCmdline(extra: string[]): string {
  return ["console=ttyS0", "loglevel=4", "tsc=reliable", "panic=0", ...extra].join(" ");
}

/**
 * Keeps built-in drivers from binding: the kernel has every driver built in,
 * and each role brings up only its own (initcall_blacklist names the init
 * functions of the stock drivers).
 */
export const DRIVER_INITCALL = { ataPiix: "piix_init", ne2kPci: "ne2k_pci_init", virtioNet: "virtio_net_driver_init", virtioBlk: "virtio_blk_init" } as const;

export function blacklist(...initcalls: string[]): string {
  return `initcall_blacklist=${initcalls.join(",")}`;
}

/**
 * A role's machine before the device manager plugs in physical devices:
 * those come only from capabilities.
 */
export interface RoleConfig {
  role: string;
  memoryMiB: number;
  cmdline: string;
}
