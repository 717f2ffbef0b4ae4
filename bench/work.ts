// What a piece of a benchmark cost: each VM's guest instructions, its
// worker's CPU and busy time (v86's counter and the worker's schedstat), and
// the whole process's CPU (every thread: the VMs' workers, V8's compiler and
// garbage-collector threads, the main thread). The disk and net benchmarks
// divide it by requests or by MB.
import type { VirtualMachine } from "../hypervisor/vm/vm.js";

export interface Work {
  /** Per VM, in the order given. */
  vms: Array<{ role: string; instructions: number; cpuMs: number; busyMs: number; spinMs: number }>;
  processMs: number;
}

/** Runs `task`, and what it cost the VMs in `vms` and the process. */
export async function measureWork<T>(vms: VirtualMachine[], task: () => Promise<T>): Promise<{ result: T; work: Work }> {
  const before = await Promise.all(vms.map((vm) => vm.cpuStatus()));
  const processBefore = process.cpuUsage();
  const result = await task();
  const processCpu = process.cpuUsage(processBefore);
  const after = await Promise.all(vms.map((vm) => vm.cpuStatus()));
  return {
    result,
    work: {
      vms: vms.map((vm, i) => ({
        role: vm.role,
        instructions: after[i].instructions - before[i].instructions,
        cpuMs: after[i].cpuMs - before[i].cpuMs,
        busyMs: after[i].busyMs - before[i].busyMs,
        spinMs: after[i].spinMs - before[i].spinMs,
      })),
      processMs: (processCpu.user + processCpu.system) / 1000,
    },
  };
}
