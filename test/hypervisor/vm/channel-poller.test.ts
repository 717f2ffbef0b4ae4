import { describe, expect, it } from "vitest";
import { createChannel, ChannelEndpoint } from "../../../dist/bridge/channel.js";
import { ChannelPoller } from "../../../dist/hypervisor/vm/channel-poller.js";

const tick = (ms = 0): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("ChannelPoller", () => {
  it("polls its channels after a busy slice and lets them sleep (and be woken) after an idle one", async () => {
    const poller = new ChannelPoller();
    const { a, b } = createChannel({ bytesPerDirection: 4096 });
    const mine = poller.open(b);
    const peer = new ChannelEndpoint(a);
    const got: number[] = [];
    mine.onMessage((m) => got.push(m[0]));
    await tick(5);
    poller.afterSlice(false); // the guest runs: the peer need not wake us
    peer.send([Uint8Array.of(1)]);
    await tick(20);
    expect(got).toEqual([]);
    poller.afterSlice(false); // the next slice ends: polled
    expect(got).toEqual([1]);
    peer.send([Uint8Array.of(2)]);
    poller.afterSlice(true); // the guest sleeps: looks once more, then relies on the doorbell
    expect(got).toEqual([1, 2]);
    peer.send([Uint8Array.of(3)]);
    for (let i = 0; i < 100 && got.length < 3; i++) await tick(5);
    expect(got).toEqual([1, 2, 3]);
    mine.close();
    peer.close();
  });
});
