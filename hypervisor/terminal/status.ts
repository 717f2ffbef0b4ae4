// Human-readable `bulkhead status`.
import type { StatusReport } from "../hypervisor.js";

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

export function formatStatus(s: StatusReport): string {
  const vmRows = [
    ["VM", "TASK", "STATE", "BOOT", "BOOT MS", "UPTIME", "RAM", "HEAP", "CPU", "NICE", "CAPABILITIES"],
    ...s.vms.map((v) => [
      v.role,
      String(v.task),
      v.state,
      v.boot ?? "-",
      v.bootMs !== null ? String(v.bootMs) : "-",
      v.uptimeS !== null ? `${v.uptimeS}s` : "-",
      `${v.memoryMiB}M`,
      `${v.heapMiB}M`,
      `${v.cpu.toFixed(1)}%`,
      v.nice !== null ? String(v.nice) : "-",
      v.capabilities.join(",") || "-",
    ]),
  ];
  const devRows = [
    ["DEVICE", "OWNER", "PCI", "IRQ", "BARS"],
    ...s.devices.map((d) => [`${d.name} (${d.description})`, d.owner, d.bdf ?? "not reported", d.irq !== null ? String(d.irq) : "-", d.bars.join(" ") || "-"]),
  ];
  const inv = s.inventory;
  const invRows = inv
    ? [
        ["PCI FUNCTION", "VENDOR:DEVICE", "CLASS", "IRQ", "BARS"],
        ...inv.functions
          .slice()
          .sort((a, b) => a.bdf.localeCompare(b.bdf))
          .map((f) => [
            f.bdf,
            `${f.vendor.toString(16).padStart(4, "0")}:${f.device.toString(16).padStart(4, "0")}`,
            f.classCode.toString(16).padStart(6, "0"),
            String(f.irq),
            f.bars.map((b) => `${b.kind} 0x${b.start.toString(16)}+0x${b.size.toString(16)}`).join(" ") || "-",
          ]),
      ]
    : undefined;
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const d = s.disk;
  const diskLines = d
    ? [
        "",
        `Disk path: app VM /dev/vda -> virtio-blk -> block channel -> disk VM blkback -> ata_piix -> ${d.image} (${mib(d.sizeBytes)})`,
        d.frontEnd
          ? `  app VM front end: ${d.frontEnd.completed} requests served (read ${d.frontEnd.requests.read}, write ${d.frontEnd.requests.write}, flush ${d.frontEnd.requests.flush}), ` +
            `${mib(d.frontEnd.bytesRead)} read, ${mib(d.frontEnd.bytesWritten)} written, ${d.frontEnd.inFlight} in flight, ` +
            `${d.frontEnd.ioErrors} I/O errors, refused ${JSON.stringify(d.frontEnd.refused)}, violations ${JSON.stringify(d.frontEnd.violations)}, replayed ${d.frontEnd.replayed}, ` +
            `rewritten ${d.frontEnd.repairs}, sectors lost ${d.frontEnd.lostSectors}` +
            (d.frontEnd.recoveries ? `; served again ${Math.round(d.frontEnd.lastServedAgainMs ?? 0)} ms after the last disk VM fault (${d.frontEnd.recoveries} recoveries)` : "")
          : "  app VM front end: not running",
        d.backEnd
          ? `  disk VM back end: ${JSON.stringify((d.backEnd as { served?: unknown }).served)} served, ${(d.backEnd as { inRing?: number }).inRing ?? 0} in the ring, ` +
            `${(d.backEnd as { queued?: number }).queued ?? 0} queued, ${(d.backEnd as { fsyncs?: number }).fsyncs ?? 0} fsyncs, ${(d.backEnd as { violations?: number }).violations ?? 0} violations`
          : "  disk VM back end: not running",
      ]
    : [];
  const n = s.net;
  type Path = { framesOut?: number; bytesOut?: number; framesIn?: number; bytesIn?: number; drops?: Record<string, number> };
  const path = (p: Path, out: string, inn: string) =>
    `${p.framesOut ?? 0} frames (${mib(p.bytesOut ?? 0)}) ${out}, ${p.framesIn ?? 0} frames (${mib(p.bytesIn ?? 0)}) ${inn}, ` +
    `dropped ${Object.keys(p.drops ?? {}).length ? Object.entries(p.drops ?? {}).map(([why, k]) => `${k} ${why}`).join(", ") : "none"}`;
  const netLines = n
    ? [
        "",
        `Network path: app VM eth0 -> virtio-net -> net channel -> net VM netback -> packet socket -> ne2k-pci -> wire (libslirp, gateway ${n.wire.gateway}, host ports: ${n.wire.allowPorts})`,
        `  wire: ${n.wire.running ? "running" : "down"}, ${n.wire.restarts} restarts, socket ${n.wire.socket}`,
        n.frontEnd
          ? `  app VM front end: ${path(n.frontEnd as Path, "sent", "received")}` +
            ((n.frontEnd.recoveries as number) ? `; served again ${Math.round((n.frontEnd.lastServedAgainMs as number) ?? 0)} ms after the last net VM fault` : "")
          : "  app VM front end: not running",
        n.backEnd ? `  net VM back end: ${path(n.backEnd as Path, "to netback", "from netback")}` : "  net VM back end: not running",
        n.nic ? `  net VM NIC on the wire: ${path(n.nic as Path, "sent", "received")}` : "  net VM NIC: not running",
      ]
    : [];
  return [
    `setup pid ${s.pid}, up ${s.upSinceS}s, resident ${s.rssMiB} MiB (all VMs)${s.sessionNice !== null ? `, session group nice ${s.sessionNice}` : ""}`,
    "",
    table(vmRows),
    "",
    table(devRows),
    ...(invRows ? ["", `PCI inventory from the pci VM (${inv!.reportedAt}):`, table(invRows)] : ["", "PCI inventory: not reported yet"]),
    ...diskLines,
    ...netLines,
  ].join("\n");
}
