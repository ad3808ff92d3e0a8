import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { useEmulator } from "./testkit";

const h = useEmulator();
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0) / 1000; // a Thursday, noon UTC
const HOUR = 3600;
const DAY = 86_400;

async function meter(formula: "sum" | "last" | "count", eventName = `ev_${formula}`) {
  return h.stripe.billing.meters.create({
    display_name: formula,
    event_name: eventName,
    default_aggregation: { formula },
  });
}

function send(
  customer: string,
  value: string,
  extra: { identifier?: string; timestamp?: number; event_name?: string } = {},
) {
  return h.stripe.billing.meterEvents.create({
    event_name: extra.event_name ?? "ev_sum",
    payload: { stripe_customer_id: customer, value },
    ...(extra.identifier ? { identifier: extra.identifier } : {}),
    ...(extra.timestamp ? { timestamp: extra.timestamp } : {}),
  });
}

describe("billing meters", () => {
  it("creates, lists and deactivates meters; event names are unique among active meters", async () => {
    const m = await meter("sum");
    expect(m).toMatchObject({
      object: "billing.meter",
      status: "active",
      event_name: "ev_sum",
      default_aggregation: { formula: "sum" },
      customer_mapping: { type: "by_id", event_payload_key: "stripe_customer_id" },
      value_settings: { event_payload_key: "value" },
    });
    expect(m.id).toMatch(/^mtr_/);
    await expect(meter("sum")).rejects.toMatchObject({ param: "event_name", statusCode: 400 });
    const off = await h.stripe.billing.meters.deactivate(m.id);
    expect(off.status).toBe("inactive");
    expect(off.status_transitions.deactivated_at).toBeTypeOf("number");
    const again = await meter("sum");
    expect((await h.stripe.billing.meters.list({ status: "active" })).data.map((x) => x.id)).toEqual([
      again.id,
    ]);
    await expect(h.stripe.billing.meters.reactivate(m.id)).rejects.toMatchObject({ param: "event_name" });
  });

  it("sums events and rejects a duplicate identifier within 24 h without counting it", async () => {
    await h.control.setClock(T0, { frozen: true });
    await meter("sum");
    const cus = await h.stripe.customers.create({});
    const first = await send(cus.id, "3", { identifier: "evt-1" });
    expect(first).toMatchObject({ object: "billing.meter_event", identifier: "evt-1", timestamp: T0 });
    await send(cus.id, "4");

    const dup = await send(cus.id, "3", { identifier: "evt-1" }).catch((e: unknown) => e);
    expect(dup).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(dup).toMatchObject({ statusCode: 400, message: "An event already exists with identifier evt-1." });
    expect(await h.control.meterUsage("ev_sum", { customer: cus.id })).toEqual({
      value: 7,
      events: 2,
      duplicates_ignored: 1,
    });

    await h.control.advanceClock(23 * HOUR);
    await expect(send(cus.id, "3", { identifier: "evt-1" })).rejects.toThrow(/already exists/);
    await h.control.advanceClock(HOUR);
    await send(cus.id, "3", { identifier: "evt-1" }); // the 24 h window has passed: counts again
    expect((await h.control.meterUsage("ev_sum", { customer: cus.id })).value).toBe(10);
  });

  it("replays an idempotent retry instead of reporting a duplicate", async () => {
    await meter("sum");
    const cus = await h.stripe.customers.create({});
    const params = {
      event_name: "ev_sum",
      identifier: "once",
      payload: { stripe_customer_id: cus.id, value: "5" },
    };
    await h.stripe.billing.meterEvents.create(params, { idempotencyKey: "post-1" });
    await h.stripe.billing.meterEvents.create(params, { idempotencyKey: "post-1" });
    expect(await h.control.meterUsage("ev_sum", { customer: cus.id })).toEqual({
      value: 5,
      events: 1,
      duplicates_ignored: 0,
    });
  });

  it("`last` keeps the value with the latest timestamp (ties: latest arrival); `count` counts", async () => {
    await h.control.setClock(T0, { frozen: true });
    await meter("last");
    await meter("count");
    const cus = await h.stripe.customers.create({});
    const last = (value: string, timestamp: number) =>
      send(cus.id, value, { event_name: "ev_last", timestamp });
    await last("5", T0 - 60);
    await last("9", T0 - 120); // older, arrives later: does not win
    await last("7", T0 - 60); // same timestamp as "5", arrives later: wins
    expect((await h.control.meterUsage("ev_last", { customer: cus.id })).value).toBe(7);
    await last("12", T0);
    expect((await h.control.meterUsage("ev_last", { customer: cus.id })).value).toBe(12);
    // a window that ends before the newest event sees the older total
    expect((await h.control.meterUsage("ev_last", { customer: cus.id, end: T0 })).value).toBe(7);

    for (const v of ["1", "100", "-3"]) await send(cus.id, v, { event_name: "ev_count" });
    expect((await h.control.meterUsage("ev_count", { customer: cus.id })).value).toBe(3);
  });

  it("validates meter events with Stripe's error codes", async () => {
    await h.control.setClock(T0, { frozen: true });
    await meter("sum");
    const cus = await h.stripe.customers.create({});
    const cases: [Stripe.Billing.MeterEventCreateParams, string, string][] = [
      [{ event_name: "nope", payload: { stripe_customer_id: cus.id, value: "1" } }, "no_meter", "event_name"],
      [
        { event_name: "ev_sum", payload: { value: "1" } },
        "meter_event_no_customer_defined",
        "payload[stripe_customer_id]",
      ],
      [
        { event_name: "ev_sum", payload: { stripe_customer_id: "cus_nope", value: "1" } },
        "meter_event_customer_not_found",
        "payload[stripe_customer_id]",
      ],
      [
        { event_name: "ev_sum", payload: { stripe_customer_id: cus.id, value: "1.5" } },
        "meter_event_invalid_value",
        "payload[value]",
      ],
      [
        { event_name: "ev_sum", payload: { stripe_customer_id: cus.id, value: "ten" } },
        "meter_event_invalid_value",
        "payload[value]",
      ],
      [
        { event_name: "ev_sum", payload: { stripe_customer_id: cus.id } },
        "parameter_missing",
        "payload[value]",
      ],
      [
        {
          event_name: "ev_sum",
          payload: { stripe_customer_id: cus.id, value: "1" },
          timestamp: T0 - 35 * DAY - 1,
        },
        "timestamp_too_far_in_past",
        "timestamp",
      ],
      [
        { event_name: "ev_sum", payload: { stripe_customer_id: cus.id, value: "1" }, timestamp: T0 + 301 },
        "timestamp_in_future",
        "timestamp",
      ],
    ];
    for (const [params, code, param] of cases) {
      await expect(h.stripe.billing.meterEvents.create(params), code).rejects.toMatchObject({
        statusCode: 400,
        rawType: "invalid_request_error",
        code,
        param,
      });
    }
    // the edges are accepted
    await send(cus.id, "1", { timestamp: T0 - 35 * DAY });
    await send(cus.id, "1", { timestamp: T0 + 300 });
    expect((await h.control.meterUsage("ev_sum", { customer: cus.id })).events).toBe(2);
  });

  it("summarises events over [start, end), optionally per day, with pagination", async () => {
    await h.control.setClock(T0, { frozen: true });
    const m = await meter("sum");
    const cus = await h.stripe.customers.create({});
    const other = await h.stripe.customers.create({});
    const day14 = T0 - 12 * HOUR - DAY; // 2026-01-14 00:00
    await send(cus.id, "2", { timestamp: day14 + HOUR });
    await send(cus.id, "3", { timestamp: day14 + DAY - 1 });
    await send(cus.id, "4", { timestamp: day14 + DAY }); // Jan 15 00:00
    await send(other.id, "100", { timestamp: day14 + HOUR });

    const total = await h.stripe.billing.meters.listEventSummaries(m.id, {
      customer: cus.id,
      start_time: day14,
      end_time: day14 + 2 * DAY,
    });
    expect(total.data).toHaveLength(1);
    expect(total.data[0]).toMatchObject({
      object: "billing.meter_event_summary",
      aggregated_value: 9,
      start_time: day14,
      end_time: day14 + 2 * DAY,
      meter: m.id,
    });
    const excludesEnd = await h.stripe.billing.meters.listEventSummaries(m.id, {
      customer: cus.id,
      start_time: day14,
      end_time: day14 + DAY,
    });
    expect(excludesEnd.data[0]?.aggregated_value).toBe(5);

    const daily: number[] = [];
    for await (const s of h.stripe.billing.meters.listEventSummaries(m.id, {
      customer: cus.id,
      start_time: day14 - 2 * DAY,
      end_time: day14 + 2 * DAY,
      value_grouping_window: "day",
      limit: 1,
    })) {
      daily.push(s.aggregated_value);
    }
    expect(daily).toEqual([0, 0, 5, 4]);

    await expect(
      h.stripe.billing.meters.listEventSummaries(m.id, {
        customer: cus.id,
        start_time: day14 + 1,
        end_time: day14 + DAY,
      }),
    ).rejects.toMatchObject({ param: "start_time" });
    await expect(
      h.stripe.billing.meters.listEventSummaries(m.id, {
        customer: cus.id,
        start_time: day14 + HOUR,
        end_time: day14 + DAY,
        value_grouping_window: "day",
      }),
    ).rejects.toMatchObject({ param: "start_time" });
  });

  it("reports usage per customer from state", async () => {
    await meter("sum");
    const a = await h.stripe.customers.create({});
    const b = await h.stripe.customers.create({});
    await send(a.id, "2");
    await send(b.id, "5");
    await send(b.id, "1");
    const usage = await h.control.meterUsageByCustomer("ev_sum");
    expect(usage).toEqual({
      event_name: "ev_sum",
      customers: {
        [a.id]: { value: 2, events: 1, duplicates_ignored: 0 },
        [b.id]: { value: 6, events: 2, duplicates_ignored: 0 },
      },
    });
    expect(await h.control.meterUsage("ev_sum", { customer: "cus_without_events" })).toEqual({
      value: 0,
      events: 0,
      duplicates_ignored: 0,
    });
  });

  it("lists received meter events with their receipt time, duplicates marked uncounted", async () => {
    await meter("sum");
    const a = await h.stripe.customers.create({});
    const b = await h.stripe.customers.create({});
    const before = Date.now();
    await send(a.id, "2", { identifier: "id-1" });
    await send(b.id, "5");
    await expect(send(a.id, "2", { identifier: "id-1" })).rejects.toThrow(/already exists/);
    const events = await h.control.meterEvents("ev_sum", a.id);
    expect(events.map((e) => [e.identifier, e.value, e.counted])).toEqual([
      ["id-1", 2, true],
      ["id-1", 2, false],
    ]);
    expect(events[0]?.received_at_ms).toBeGreaterThanOrEqual(before);
    expect(await h.control.meterEvents("ev_sum")).toHaveLength(3);
  });

  it("allows one meter-event request in flight per customer and meter (429 otherwise)", async () => {
    await meter("sum");
    const a = await h.stripe.customers.create({});
    const b = await h.stripe.customers.create({});
    await h.control.addFault({ delay_ms: 300, count: 1, path_prefix: "/v1/billing/meter_events" });
    const slow = send(a.id, "1");
    await new Promise((resolve) => setTimeout(resolve, 50));
    const concurrent = await send(a.id, "1").catch((e: unknown) => e);
    expect(concurrent).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    await send(b.id, "1"); // another customer is not blocked
    await slow;
    await send(a.id, "1"); // sequential calls are fine
    expect((await h.control.meterUsage("ev_sum", { customer: a.id })).value).toBe(2);
  });
});
