// Builds a worker's host-side devices from its spec.
import { virtioBlkDevice } from "../../bridge/virtio-blk/host-device.js";
import { diskBackEndDevice } from "../../drivervm/disk/host-device.js";
import type { ImageFile } from "../../drivervm/disk/image-file.js";
import type { DeviceContext, HostDevice } from "./host-device.js";
import type { DeviceSpec } from "./messages.js";

export function buildDevices(specs: DeviceSpec[], ctx: DeviceContext, image: ImageFile | undefined): HostDevice[] {
  return specs.map((spec) => {
    switch (spec.kind) {
      case "virtio-blk":
        return virtioBlkDevice(ctx, spec.capacitySectors);
      case "disk":
        if (!image) throw new Error("disk device without an image");
        return diskBackEndDevice(ctx, image);
    }
  });
}
