// The command line every benchmark takes: its own numeric options, each with
// a floor, plus --json and --help. A wrong option ends the run before any VM
// boots, with one line that says what is wrong (exit status 2).
import { parseArgs } from "node:util";

export interface NumberOption {
  default: number;
  /** The smallest value that makes sense. */
  min: number;
  /** The value's name in the usage line, e.g. N or SECONDS. */
  value: string;
  help: string;
}

export function benchOptions<K extends string>(bench: string, about: string[], numbers: Record<K, NumberOption>): Record<K, number> & { json: boolean } {
  const entries = Object.entries(numbers) as Array<[K, NumberOption]>;
  const options: Record<string, { type: "string" | "boolean"; short?: string; default?: string | boolean }> = {
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  };
  for (const [name, o] of entries) options[name] = { type: "string", default: String(o.default) };

  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ options }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    return fail(`${(err as Error).message} (see bulkhead bench ${bench} --help)`);
  }

  if (values.help) {
    const usage = entries.map(([name, o]) => `[--${name} ${o.value}]`).join(" ");
    const line = (flag: string, help: string) => `  ${flag.padEnd(22)}${help}`;
    process.stdout.write(
      [
        `usage: bulkhead bench ${bench} ${usage} [--json]`,
        `   (or node dist/bench/${bench}.js with the same options)`,
        "",
        ...about,
        "",
        ...entries.map(([name, o]) => line(`--${name} ${o.value}`, `${o.help} (default ${o.default})`)),
        line("--json", "print the report as JSON"),
      ].join("\n") + "\n",
    );
    process.exit(0);
  }

  const result = { json: values.json === true } as Record<K, number> & { json: boolean };
  for (const [name, o] of entries) {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < o.min) fail(`--${name} must be a number >= ${o.min}`);
    (result as Record<string, number | boolean>)[name] = v;
  }
  return result;
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}
