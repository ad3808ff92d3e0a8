/**
 * The control server's decisions: crashes stay within their bounds (so every message still
 * completes long before its retries run out), the poison is refused by the classifier only and
 * only until it is fixed, and every crash reported is counted.
 */
import { afterEach, describe, expect, it } from "vitest";
import { type ControlServer, startControl } from "./control";
import type { QueueMessageInfo } from "./protocol";

let control: ControlServer | null = null;
afterEach(async () => {
  await control?.close();
  control = null;
});

async function post(path: string, body: unknown): Promise<unknown> {
  if (!control) throw new Error("no control server");
  const res = await fetch(`${control.url}${path}`, { method: "POST", body: JSON.stringify(body) });
  return res.json();
}

const msg = (
  id: string,
  attempts: number,
  kind: QueueMessageInfo["kind"] = "events",
  sessions: string[] = [],
) => ({
  id,
  attempts,
  key: `k-${id}`,
  kind,
  sessions,
});

describe("chaos control", () => {
  it("never crashes a batch holding an event message past its first delivery", async () => {
    control = await startControl(1, {
      queue: { classifier: 1 },
      fetch: {},
      scheduled: 0,
      scheduledBudget: 0,
    });
    const first = await post("/plan/queue", { worker: "classifier", queue: "q", messages: [msg("a", 1)] });
    const again = await post("/plan/queue", {
      worker: "classifier",
      queue: "q",
      messages: [msg("a", 2), msg("b", 1)],
    });
    expect(first).toMatchObject({ crash: { at: expect.any(Number) } });
    expect(again).toEqual({ crash: null, refuse: [] });
  });

  it("refuses the poison in the classifier until it is fixed, never in the dead-letter drain", async () => {
    control = await startControl(1, { queue: {}, fetch: {}, scheduled: 0, scheduledBudget: 0 });
    await post("/poison", { sessions: ["p1"] });
    const batch = [msg("x", 1, "events", ["p1", "s2"]), msg("y", 1, "events", ["s3"])];
    expect(await post("/plan/queue", { worker: "classifier", queue: "q", messages: batch })).toEqual({
      crash: null,
      refuse: ["x"],
    });
    expect(await post("/plan/queue", { worker: "api", queue: "q-dlq", messages: batch })).toEqual({
      crash: null,
      refuse: [],
    });
    await post("/poison/fix", {});
    expect(await post("/plan/queue", { worker: "classifier", queue: "q", messages: batch })).toEqual({
      crash: null,
      refuse: [],
    });
  });

  it("crashes a request only on its first delivery and counts the crashes reported", async () => {
    control = await startControl(3, { queue: {}, fetch: { webhooks: 1 }, scheduled: 0, scheduledBudget: 0 });
    expect(await post("/plan/fetch", { worker: "webhooks", key: "evt_1" })).toMatchObject({
      crash: { at: expect.any(Number) },
    });
    expect(await post("/plan/fetch", { worker: "webhooks", key: "evt_1" })).toEqual({ crash: null });
    await post("/crashed", { worker: "webhooks", point: "db.batch", mode: "hard", sent: null });
    expect(control.stats()).toMatchObject({ crashes: 1, hardCrashes: 1, crashesByWorker: { webhooks: 1 } });
  });

  it("stops crashing crons once their budget is spent, and crashes nothing while disabled", async () => {
    control = await startControl(5, { queue: { biller: 1 }, fetch: {}, scheduled: 1, scheduledBudget: 2 });
    const plans = [];
    for (let i = 0; i < 5; i++)
      plans.push(await post("/plan/scheduled", { worker: "biller", cron: "* * * * *" }));
    expect(plans.filter((p) => JSON.stringify(p) !== '{"crash":null}')).toHaveLength(2);
    await post("/enabled", { enabled: false });
    expect(
      await post("/plan/queue", { worker: "biller", queue: "v", messages: [msg("v", 1, "verdict")] }),
    ).toEqual({
      crash: null,
      refuse: [],
    });
  });
});
