// The adapter learns that the guest acknowledged a receive interrupt by
// wrapping the NE2000's ISR port handler, and must leave the model's
// fields plain data properties: an accessor put v86's NE2000 object into
// V8's slow dictionary mode and made every register access a hash lookup.
import { describe, expect, it } from "vitest";
import { watchRxAck } from "../../../hypervisor/v86/adapter.js";

/** A stand-in for v86's NE2000 and its ISR port entry (page 0: a write clears the bits it sets). */
function nic() {
  const model = { port: 0x300, isr: 0, cr: 0 };
  const ports: Array<{ write8: (this: unknown, v: number) => void; device: unknown }> = [];
  const writes: number[] = [];
  ports[0x307] = {
    device: model,
    write8(this: unknown, v: number) {
      writes.push(v);
      (this as typeof model).isr &= ~v;
    },
  };
  const write = (v: number) => ports[0x307].write8.call(ports[0x307].device, v);
  return { model, ports, writes, write };
}

describe("NE2000 receive acknowledgment", () => {
  it("tells its listeners when the guest clears the receive bit, and only then", () => {
    const { model, ports, writes, write } = nic();
    const listeners = watchRxAck({ ports }, model);
    let acks = 0;
    listeners.push(() => acks++);
    model.isr = 0x03; // RX and TX pending
    write(0x02); // TX acknowledged: RX still set
    expect(acks).toBe(0);
    write(0x01);
    expect(acks).toBe(1);
    expect(model.isr).toBe(0);
    write(0x01); // nothing was pending
    expect(acks).toBe(1);
    // v86's own handler still ran for every write.
    expect(writes).toEqual([0x02, 0x01, 0x01]);
  });

  it("leaves the model's fields as plain data, and wraps the port once", () => {
    const { model, ports, write } = nic();
    const first = watchRxAck({ ports }, model);
    expect(watchRxAck({ ports }, model)).toBe(first);
    const isr = Object.getOwnPropertyDescriptor(model, "isr")!;
    expect("value" in isr && isr.get === undefined && isr.set === undefined).toBe(true);
    let acks = 0;
    first.push(() => acks++);
    model.isr = 0x01;
    write(0x01);
    expect(acks).toBe(1); // one wrapper, one notification
  });
});
