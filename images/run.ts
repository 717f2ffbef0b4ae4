// Running build tools: output goes to a log file, a failure names the log.
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { dirname } from "node:path";

export class BuildError extends Error {
  override readonly name = "BuildError";
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  log: string;
  /** Called with each line the command prints (stdout and stderr). */
  onLine?: (line: string) => void;
  /** Keep stdout out of the log (binary output, such as an archive). */
  quietStdout?: boolean;
}

/** Runs a command to completion; rejects with the log's tail on failure. */
export function run(cmd: string, args: string[], opts: RunOptions): Promise<Buffer> {
  mkdirSync(dirname(opts.log), { recursive: true });
  const log = createWriteStream(opts.log, { flags: "a" });
  log.write(`$ ${cmd} ${args.join(" ")}\n`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const tail: string[] = [];
    let partial = "";
    const onText = (chunk: Buffer, keep: boolean) => {
      if (keep) stdout.push(chunk);
      if (!(keep && opts.quietStdout)) log.write(chunk);
      const text = partial + chunk.toString("utf8");
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        tail.push(line);
        if (tail.length > 20) tail.shift();
        opts.onLine?.(line);
      }
    };
    child.stdout.on("data", (c: Buffer) => onText(c, true));
    child.stderr.on("data", (c: Buffer) => onText(c, false));
    child.on("error", (err) => {
      log.end();
      reject(new BuildError(`${cmd} could not start: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      log.end();
      if (code === 0) resolvePromise(Buffer.concat(stdout));
      else
        reject(
          new BuildError(
            `${cmd} ${args.slice(0, 3).join(" ")} failed (${signal ?? `exit ${code}`}); log: ${opts.log}\n` +
              tail.slice(-10).join("\n"),
          ),
        );
    });
    child.stdin.end();
  });
}
