import { describe, expect, it } from "vitest";
import { RestartPolicy } from "../../../dist/hypervisor/monitor/policy.js";

describe("RestartPolicy", () => {
  const opts = { maxRestarts: 3, windowMs: 60_000, baseBackoffMs: 0, maxBackoffMs: 1000 };

  it("restarts at once first, then backs off exponentially", () => {
    const p = new RestartPolicy(opts);
    expect(p.decide("disk", 0)).toEqual({ action: "restart", delayMs: 0 });
    expect(p.decide("disk", 1)).toEqual({ action: "restart", delayMs: 100 });
    expect(p.decide("disk", 2)).toEqual({ action: "restart", delayMs: 200 });
  });

  it("gives up past the budget and forgets restarts older than the window", () => {
    const p = new RestartPolicy(opts);
    for (let i = 0; i < 3; i++) p.decide("net", i);
    expect(p.decide("net", 10)).toEqual({ action: "give-up", reason: "3 restarts within 60 s" });
    expect(p.decide("net", 70_000)).toMatchObject({ action: "restart" });
  });

  it("keeps a separate budget per VM and resets on request", () => {
    const p = new RestartPolicy(opts);
    for (let i = 0; i < 3; i++) p.decide("net", i);
    expect(p.decide("disk", 5)).toMatchObject({ action: "restart" });
    p.reset("net");
    expect(p.decide("net", 6)).toEqual({ action: "restart", delayMs: 0 });
  });
});
