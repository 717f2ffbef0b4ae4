// Attaches the terminal to the application VM's serial console. Ctrl-]
// detaches (and `up` then shuts the setup down), like telnet's escape.
import type { VirtualMachine } from "../vm/vm.js";

export const DETACH_KEY = 0x1d; // Ctrl-]

export function attachConsole(vm: VirtualMachine, onDetach: () => void): () => void {
  const stdin = process.stdin;
  const onConsole = (data: Buffer) => process.stdout.write(data);
  const onInput = (data: Buffer) => {
    const at = data.indexOf(DETACH_KEY);
    if (at >= 0) {
      if (at > 0) vm.writeConsole(data.subarray(0, at));
      detach();
      onDetach();
      return;
    }
    try {
      vm.writeConsole(data);
    } catch {
      // the VM is restarting: keystrokes typed meanwhile are dropped
    }
  };
  vm.on("console", onConsole);
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.resume();
  stdin.on("data", onInput);
  // Ask the shell for a fresh prompt.
  vm.writeConsole(Buffer.from("\n"));
  const detach = () => {
    vm.off("console", onConsole);
    stdin.off("data", onInput);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
  };
  return detach;
}
