/**
 * /v1/test_helpers/test_clocks: create, retrieve, list, delete, advance. A customer created with
 * `test_clock` lives at the clock's frozen time; advancing the clock runs everything that falls due
 * for its customers in time order ("advance to a specific future time to observe webhooks and
 * state changes").
 */
import { type App, type Ctx, requestInfo, send } from "../context";
import { invalidRequest, missingReference, notFound } from "../errors";
import { Emission } from "../invoicing";
import { intervalOf } from "../items";
import { processDue } from "../lifecycle";
import { newestFirst, paginate } from "../list";
import { addInterval } from "../pricing";
import { DAY, newId, type TestClockRec } from "../state";
import { testClockView } from "../views";

export function getTestClock(ctx: Ctx, id: string): TestClockRec {
  const rec = ctx.state.testClocks.get(id);
  if (!rec) throw notFound("test_helpers.test_clock", id);
  return rec;
}

/**
 * `frozen_time` of an advance: "Must be after the test clock's current frozen time. Cannot be more
 * than two intervals in the future from the shortest subscription in this test clock. If there are
 * no subscriptions in this test clock, it cannot be more than two years in the future."
 */
export function advanceLimit(ctx: Ctx, clock: TestClockRec): number {
  const { state } = ctx;
  let limit = addInterval(clock.frozenTime, "year", 2);
  for (const sub of state.subscriptions.values()) {
    if (sub.status === "canceled" || state.customers.get(sub.customer)?.testClock !== clock.id) continue;
    const { interval, intervalCount } = intervalOf(ctx, sub);
    limit = Math.min(limit, addInterval(clock.frozenTime, interval, 2 * intervalCount));
  }
  return limit;
}

/** Deleting a clock deletes the test objects on it: its customers and everything they own. */
function deleteClockObjects(ctx: Ctx, clock: TestClockRec): void {
  const { state } = ctx;
  const customers = new Set(
    [...state.customers.values()].filter((c) => c.testClock === clock.id).map((c) => c.id),
  );
  const owned = <T extends { customer: string | null }>(m: Map<string, T>) => {
    for (const [id, rec] of m) if (rec.customer !== null && customers.has(rec.customer)) m.delete(id);
  };
  owned(state.subscriptions);
  owned(state.invoices);
  owned(state.invoiceItems);
  owned(state.schedules);
  owned(state.portalSessions);
  owned(state.checkoutSessions);
  for (const id of customers) state.customers.delete(id);
}

export function testClockRoutes(app: App, ctx: Ctx): void {
  const { state } = ctx;

  app.post("/v1/test_helpers/test_clocks", (c) => {
    const p = c.get("params");
    const frozenTime = p.int("frozen_time");
    const name = p.optString("name") ?? null;
    if (name !== null && name.length > 300) {
      throw invalidRequest("name must be at most 300 characters.", undefined, "name");
    }
    const customerId = p.optString("customer");
    const customer = customerId ? state.customers.get(customerId) : undefined;
    if (customerId && !customer) throw missingReference("customer", customerId, "customer");
    if (customer?.testClock) {
      throw invalidRequest(
        `Customer ${customer.id} is already attached to a test clock.`,
        undefined,
        "customer",
      );
    }
    const now = state.now();
    const rec: TestClockRec = {
      id: newId("clock", 24),
      created: now,
      deletesAfter: now + 7 * DAY,
      frozenTime,
      name,
      status: "ready",
      target: null,
    };
    state.testClocks.set(rec.id, rec);
    // "Once attached, customers can't be removed from a test clock."
    if (customer) customer.testClock = rec.id;
    new Emission(ctx, requestInfo(c)).emit("test_helpers.test_clock.created", testClockView(rec));
    return send(c, ctx, testClockView(rec));
  });

  app.get("/v1/test_helpers/test_clocks/:id", (c) =>
    send(c, ctx, testClockView(getTestClock(ctx, c.req.param("id")))),
  );

  app.get("/v1/test_helpers/test_clocks", (c) => {
    const p = c.get("params");
    return send(
      c,
      ctx,
      paginate(newestFirst(state.testClocks.values()), p, "/v1/test_helpers/test_clocks", testClockView),
    );
  });

  app.delete("/v1/test_helpers/test_clocks/:id", (c) => {
    const clock = getTestClock(ctx, c.req.param("id"));
    deleteClockObjects(ctx, clock);
    state.testClocks.delete(clock.id);
    new Emission(ctx, requestInfo(c)).emit("test_helpers.test_clock.deleted", testClockView(clock));
    return send(c, ctx, { id: clock.id, object: "test_helpers.test_clock", deleted: true });
  });

  /**
   * "Starts advancing a test clock to a specified time in the future. Advancement is done when status
   * changes to `Ready`." The answer shows the clock `advancing` (as Stripe answers); the emulator
   * does the work before answering, so the next retrieve shows it `ready`.
   */
  app.post("/v1/test_helpers/test_clocks/:id/advance", (c) => {
    const clock = getTestClock(ctx, c.req.param("id"));
    const target = c.get("params").int("frozen_time");
    if (clock.status !== "ready") {
      throw invalidRequest(
        `Test clock ${clock.id} cannot advance (status: ${clock.status}).`,
        undefined,
        "frozen_time",
      );
    }
    if (target <= clock.frozenTime) {
      throw invalidRequest(
        `The frozen_time must be after the test clock's current frozen time (${clock.frozenTime}).`,
        "parameter_invalid_integer",
        "frozen_time",
      );
    }
    const limit = advanceLimit(ctx, clock);
    if (target > limit) {
      throw invalidRequest(
        `Cannot advance the test clock to ${target}: it can move at most two intervals of its shortest subscription ` +
          `(or two years without subscriptions) ahead of its frozen time, that is to ${limit}.`,
        "parameter_invalid_integer",
        "frozen_time",
      );
    }
    const em = new Emission(ctx, requestInfo(c));
    clock.status = "advancing";
    clock.target = target;
    const answer = testClockView(clock);
    em.emit("test_helpers.test_clock.advancing", answer);
    try {
      processDue(ctx, clock.id, clock.frozenTime, target, (t) => {
        clock.frozenTime = t;
      });
    } catch (err) {
      // "internal_failure: Failed to advance time. Future requests to advance time will fail."
      clock.status = "internal_failure";
      em.emit("test_helpers.test_clock.internal_failure", testClockView(clock));
      throw err;
    }
    clock.status = "ready";
    clock.target = null;
    em.emit("test_helpers.test_clock.ready", testClockView(clock));
    return send(c, ctx, answer);
  });
}
