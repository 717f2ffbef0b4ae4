// Builds a worker's host-side devices from its spec.
import { virtioBlkDevice } from "../../bridge/virtio-blk/host-device.js";
import { virtioNetDevice } from "../../bridge/virtio-net/host-device.js";
import { diskBackEndDevice } from "../../drivervm/disk/host-device.js";
import { netBackEndDevice } from "../../drivervm/net/host-device.js";
import { wireLinkDevice } from "../../drivervm/net/wire-link.js";
import type { ImageFile } from "../../drivervm/disk/image-file.js";
import type { DeviceContext, HostDevice } from "./host-device.js";
import type { DeviceSpec } from "./messages.js";

/** The physical disk itself is the machine's (see worker.ts); the rest are device models. */
export function buildDevices(specs: DeviceSpec[], ctx: DeviceContext, image: ImageFile | undefined): HostDevice[] {
  return specs.flatMap((spec): HostDevice[] => {
    switch (spec.kind) {
      case "virtio-blk":
        return [virtioBlkDevice(ctx, spec.capacitySectors)];
      case "block-backend":
        if (!image) throw new Error("a block back end needs a physical disk");
        return [diskBackEndDevice(ctx, image)];
      case "physical-disk":
        return [];
      case "virtio-net":
        return [virtioNetDevice(ctx, spec.mac)];
      case "wire":
        return [wireLinkDevice(ctx.machine.ne2k(), spec.socketPath, (line) => console.error(`[wire] ${line}`))];
      case "net-backend":
        return [netBackEndDevice(ctx)];
    }
  });
}
