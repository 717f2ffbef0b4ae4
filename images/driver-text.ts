// Where each driver VM's device driver code lives in the guest kernel, for
// the `flip` fault (software-implemented fault injection, as in the Nooks
// and MINIX 3 campaigns). Our drivers are built in, so each driver object's
// .text section sits somewhere in the kernel's text: its address comes from
// the kernel's System.map (a symbol of the object, minus its offset in the
// object), its size from the object's section header.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./run.js";

/** The stock driver objects of each driver VM (paths in the kernel build tree). */
export const DRIVER_OBJECTS: Record<string, string[]> = {
  disk: ["drivers/ata/ata_piix.o", "drivers/ata/libata-core.o", "drivers/ata/libata-sff.o", "drivers/ata/libata-eh.o", "drivers/ata/libata-scsi.o"],
  net: ["drivers/net/ethernet/8390/ne2k-pci.o", "drivers/net/ethernet/8390/8390.o"],
};

/** A driver object's code: kernel virtual addresses [start, end). */
export interface TextRange {
  object: string;
  start: number;
  end: number;
}

export type DriverText = Record<string, TextRange[]>;

async function textRange(build: string, object: string, map: Map<string, number[]>, log: string): Promise<TextRange> {
  const path = join(build, object);
  const dump = (await run("objdump", ["-h", "-t", path], { log })).toString();
  const size = /^\s*\d+\s+\.text\s+([0-9a-f]+)/m.exec(dump);
  if (!size) throw new Error(`${object}: no .text section`);
  // Symbols in .text: "00000310 l     F .text  000000b2 do_pata_set_dmamode"
  const bases = new Map<number, number>();
  for (const m of dump.matchAll(/^([0-9a-f]{8,16}) [lgw ][ !]+\s*F? \.text\s+[0-9a-f]+ (\S+)$/gm)) {
    const addrs = map.get(m[2]);
    if (addrs?.length !== 1) continue; // a name several objects use tells nothing
    const base = addrs[0] - parseInt(m[1], 16);
    bases.set(base, (bases.get(base) ?? 0) + 1);
  }
  const best = [...bases.entries()].sort((a, b) => b[1] - a[1])[0];
  if (!best) throw new Error(`${object}: none of its functions is in System.map`);
  return { object, start: best[0], end: best[0] + parseInt(size[1], 16) };
}

/** Computes (or reads) the driver text map of a kernel build. */
export async function driverText(build: string, out: string, log: string): Promise<DriverText | undefined> {
  if (existsSync(out)) return JSON.parse(readFileSync(out, "utf8")) as DriverText;
  const mapPath = join(build, "System.map");
  if (!existsSync(mapPath)) return undefined;
  const map = new Map<string, number[]>();
  for (const line of readFileSync(mapPath, "utf8").split("\n")) {
    const [addr, type, name] = line.split(" ");
    if (!name || !/^[tT]$/.test(type)) continue;
    map.set(name, [...(map.get(name) ?? []), parseInt(addr, 16)]);
  }
  const result: DriverText = {};
  for (const [role, objects] of Object.entries(DRIVER_OBJECTS)) {
    result[role] = [];
    for (const object of objects) result[role].push(await textRange(build, object, map, log));
  }
  writeFileSync(out, JSON.stringify(result, null, 1) + "\n");
  return result;
}
