// Tasks: one per VM. A task id outlives reboots of its VM (the worker is
// replaced, the task and its capabilities stay); policy lives elsewhere.
import type { VirtualMachine } from "../vm/vm.js";

export interface Task {
  readonly id: number;
  readonly role: string;
  /** Set once the task's machine is built (it depends on the task's capabilities). */
  vm?: VirtualMachine;
}

export class TaskTable {
  private next = 1;
  private readonly tasks = new Map<number, Task>();

  create(role: string): Task {
    if (this.byRole(role)) throw new Error(`a task for role ${role} exists already`);
    const task: Task = { id: this.next++, role };
    this.tasks.set(task.id, task);
    return task;
  }

  get(id: number): Task | undefined {
    return this.tasks.get(id);
  }

  byRole(role: string): Task | undefined {
    for (const t of this.tasks.values()) if (t.role === role) return t;
    return undefined;
  }

  all(): Task[] {
    return [...this.tasks.values()];
  }
}
