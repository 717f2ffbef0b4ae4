// The application VM: no physical device in its machine (it holds no
// capability for one) and no disk or NIC driver bound. Its devices are
// paravirtual and served by the driver VMs.
import { baseCmdline, blacklist, DRIVER_INITCALL as D, type RoleConfig } from "../hypervisor/vm/spec.js";

export const APP_VM: RoleConfig = {
  role: "app",
  memoryMiB: 128,
  cmdline: baseCmdline([blacklist(D.ataPiix, D.ne2kPci)]),
};
