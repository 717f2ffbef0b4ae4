// Waiting with a deadline, for the net tests: a failure names what never came.

/** A promise, or an error naming WHAT after MS milliseconds. */
export function within<T>(what: string, p: Promise<T>, ms = 2000): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Resolves once `cond` holds, looking every 10 ms; an error naming WHAT after MS milliseconds. */
export async function until(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
