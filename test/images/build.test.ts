import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { missingOptions } from "../../dist/images/kernel.js";
import { assertI386Elf } from "../../dist/images/initramfs.js";

describe("image build checks", () => {
  it("reports config options that Kconfig dropped", () => {
    const wanted = "# comment\nCONFIG_A=y\nCONFIG_B=y\n";
    const got = "CONFIG_A=y\n# CONFIG_B is not set\n";
    expect(missingOptions(wanted, got)).toEqual(["CONFIG_B=y"]);
  });

  it("refuses a helper that is not an i386 executable", () => {
    const dir = mkdtempSync(join(tmpdir(), "bh-elf-"));
    const f = join(dir, "x");
    writeFileSync(f, "#!/bin/sh\necho hi\n");
    expect(() => assertI386Elf(f)).toThrow(/is not an i386 ELF executable/);
    expect(() => assertI386Elf(process.execPath)).toThrow(/is not an i386 ELF executable/);
  });
});
