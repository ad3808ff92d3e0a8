/** Test controls under /_emulator (JSON in and out, no auth). See README.md for the contract. */
import { completeCheckout, parseCheckoutDetails } from "../checkout";
import type { App, C, Ctx } from "../context";
import { invalidRequest, jsonResponse, notFound } from "../errors";
import { stripIncludables } from "../expand";
import { faultView, parseFault } from "../faults";
import { attemptPayment, Emission } from "../invoicing";
import { processDue } from "../lifecycle";
import { usageByCustomer } from "../meters";
import type {
  CallView,
  ClockMoveResult,
  ClockView,
  ClosePeriodResult,
  FaultRequest,
  InvoiceSettingsView,
  MeterEventView,
  MeterUsageByCustomer,
  PayInvoiceResult,
} from "../protocol";
import type { MeterEventRec, MeterRec } from "../state";
import { cycle } from "../subscriptions";
import { parseTaxRates, taxRatesView } from "../tax";
import { invoiceView, subscriptionView } from "../views";
import { NO_REQUEST } from "../webhooks";
import { getInvoice } from "./invoices";
import { getSubscription } from "./subscriptions";

async function jsonBody(c: C): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw invalidRequest("The body must be JSON.");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidRequest("The body must be a JSON object.");
  }
  return Object.fromEntries(Object.entries(body));
}

function optInteger(body: Record<string, unknown>, key: string): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw invalidRequest(`${key} must be an integer.`, undefined, key);
  }
  return value;
}

function optText(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalidRequest(`${key} must be a string.`, undefined, key);
  return value;
}

function optBoolean(body: Record<string, unknown>, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw invalidRequest(`${key} must be a boolean.`, undefined, key);
  return value;
}

function invoiceSettings(ctx: Ctx): InvoiceSettingsView {
  return { finalization_grace_seconds: ctx.state.finalizationGraceSeconds };
}

function queryInt(c: C, key: string): number | undefined {
  const raw = c.req.query(key);
  if (raw === undefined || raw === "") return undefined;
  if (!/^-?\d+$/.test(raw)) throw invalidRequest(`${key} must be an integer.`, undefined, key);
  return Number(raw);
}

function meterByEventName(ctx: Ctx, eventName: string): MeterRec {
  const meters = [...ctx.state.meters.values()].filter((m) => m.eventName === eventName);
  const meter = meters.find((m) => m.status === "active") ?? meters[meters.length - 1];
  if (!meter) throw notFound("billing meter with event_name", eventName, "event_name");
  return meter;
}

function clockView(ctx: Ctx): ClockView {
  return { now: ctx.state.now(), offset_seconds: ctx.state.clockOffset, frozen: ctx.state.frozenAt !== null };
}

export function emulatorRoutes(app: App, ctx: Ctx, reset: () => void): void {
  const { state, webhooks } = ctx;
  const json = (body: unknown) => jsonResponse(stripIncludables(body));

  app.get("/_emulator/health", () => json({ ok: true, url: ctx.baseUrl() }));

  app.post("/_emulator/reset", () => {
    reset();
    return json({ ok: true });
  });

  app.post("/_emulator/checkout/sessions/:id/complete", async (c) =>
    json(completeCheckout(ctx, c.req.param("id"), parseCheckoutDetails(await jsonBody(c)))),
  );

  app.get("/_emulator/tax_rates", () => json({ rates: taxRatesView(ctx.state) }));

  /** Replaces the flat per-country tax rates (percent) the emulator's Stripe Tax applies. */
  app.post("/_emulator/tax_rates", async (c) => {
    const body = await jsonBody(c);
    if (body.rates === undefined) throw invalidRequest("rates is required.", "parameter_missing", "rates");
    state.taxRates = parseTaxRates(body.rates);
    return json({ rates: taxRatesView(ctx.state) });
  });

  app.post("/_emulator/customers/:id/fail_next_payment", (c) => {
    const customer = state.customers.get(c.req.param("id"));
    if (!customer) throw notFound("customer", c.req.param("id"));
    customer.failNextPayment = true;
    return json({ customer: customer.id, fail_next_payment: true });
  });

  app.post("/_emulator/subscriptions/:id/close_period", async (c) => {
    const body = await jsonBody(c);
    const sub = getSubscription(ctx, c.req.param("id"));
    const em = new Emission(ctx, NO_REQUEST);
    const at = optInteger(body, "at");
    const invoice = cycle(ctx, sub, em, at === undefined ? { finalize: "now" } : { at, finalize: "now" });
    const result: ClosePeriodResult = {
      invoice: invoiceView(state, invoice),
      subscription: subscriptionView(state, sub),
      events: em.ids,
    };
    return json(result);
  });

  app.post("/_emulator/invoices/:id/pay", (c) => {
    const invoice = getInvoice(ctx, c.req.param("id"));
    const em = new Emission(ctx, NO_REQUEST);
    attemptPayment(ctx, invoice, em);
    const sub = invoice.subscription ? getSubscription(ctx, invoice.subscription) : null;
    const result: PayInvoiceResult = {
      invoice: invoiceView(state, invoice),
      subscription: sub && subscriptionView(state, sub),
      events: em.ids,
    };
    return json(result);
  });

  app.get("/_emulator/faults", () => json({ faults: state.faults.map(faultView) }));

  app.post("/_emulator/faults", async (c) => {
    const body = await jsonBody(c);
    const request: FaultRequest = {
      status: optInteger(body, "status"),
      count: optInteger(body, "count"),
      delay_ms: optInteger(body, "delay_ms"),
      path_prefix: optText(body, "path_prefix"),
    };
    state.faults.push(parseFault(request));
    return json({ faults: state.faults.map(faultView) });
  });

  app.delete("/_emulator/faults", () => {
    state.faults = [];
    return json({ faults: [] });
  });

  app.get("/_emulator/clock", () => json(clockView(ctx)));

  app.post("/_emulator/clock", async (c) => {
    const body = await jsonBody(c);
    const advance = optInteger(body, "advance_seconds");
    const now = optInteger(body, "now");
    if ((advance === undefined) === (now === undefined)) {
      throw invalidRequest("Pass exactly one of advance_seconds or now.");
    }
    const frozen = optBoolean(body, "frozen");
    const process = optBoolean(body, "process") ?? true;
    const from = state.now();
    const target = now ?? from + (advance ?? 0);
    const keepFrozen = frozen ?? state.frozenAt !== null;
    let events: string[] = [];
    try {
      if (process && target >= from)
        events = processDue(ctx, null, from, target, (t) => state.setClock(t, true));
    } finally {
      state.setClock(target, keepFrozen);
    }
    const result: ClockMoveResult = { ...clockView(ctx), events };
    return json(result);
  });

  app.get("/_emulator/invoice_settings", () => json(invoiceSettings(ctx)));

  app.post("/_emulator/invoice_settings", async (c) => {
    const body = await jsonBody(c);
    const grace = optInteger(body, "finalization_grace_seconds");
    if (grace === undefined) {
      throw invalidRequest(
        "finalization_grace_seconds is required.",
        "parameter_missing",
        "finalization_grace_seconds",
      );
    }
    if (grace < 0 || grace > 72 * 3600) {
      throw invalidRequest(
        "finalization_grace_seconds must be between 0 and 259200 (72 hours).",
        "parameter_invalid_integer",
        "finalization_grace_seconds",
      );
    }
    state.finalizationGraceSeconds = grace;
    return json(invoiceSettings(ctx));
  });

  app.get("/_emulator/calls", () => {
    const calls: CallView[] = state.calls;
    return json({ calls });
  });

  app.post("/_emulator/calls/reset", () => {
    state.calls = [];
    return json({ calls: [] });
  });

  app.get("/_emulator/events", (c) => {
    const type = c.req.query("type");
    const events = state.events.filter((e) => !type || e.type === type).map((e) => e.body);
    return json({ events });
  });

  app.get("/_emulator/webhooks", () => json({ url: webhooks.url, deliveries: webhooks.deliveries() }));

  app.post("/_emulator/webhooks/config", async (c) => {
    const body = await jsonBody(c);
    const url = body.url === null ? null : optText(body, "url");
    if (url === undefined)
      throw invalidRequest("url is required (a URL, or null to stop delivering).", undefined, "url");
    if (url !== null && !/^https?:\/\//.test(url))
      throw invalidRequest("url must be http(s).", undefined, "url");
    webhooks.configure(url, optText(body, "secret"));
    return json({ url: webhooks.url });
  });

  app.post("/_emulator/webhooks/drain", () => json({ deliveries: webhooks.drain() }));

  app.get("/_emulator/meters/:event_name/usage", (c) => {
    const meter = meterByEventName(ctx, c.req.param("event_name"));
    const start = queryInt(c, "start") ?? Number.NEGATIVE_INFINITY;
    const end = queryInt(c, "end") ?? Number.POSITIVE_INFINITY;
    const customer = c.req.query("customer");
    const usage = usageByCustomer(state, meter, start, end, customer || undefined);
    if (customer) return json(usage[customer]);
    const result: MeterUsageByCustomer = { event_name: meter.eventName, customers: usage };
    return json(result);
  });

  app.get("/_emulator/meters/:event_name/events", (c) => {
    const meter = meterByEventName(ctx, c.req.param("event_name"));
    const customer = c.req.query("customer");
    const view =
      (counted: boolean) =>
      (e: MeterEventRec): MeterEventView => ({
        identifier: e.identifier,
        customer: e.customer,
        value: e.value,
        timestamp: e.timestamp,
        received_at_ms: e.receivedAtMs,
        counted,
      });
    const mine = (e: MeterEventRec) => e.meter === meter.id && (!customer || e.customer === customer);
    const events = [
      ...state.meterEvents.filter(mine).map(view(true)),
      ...state.duplicateMeterEvents.filter(mine).map(view(false)),
    ].sort((a, b) => a.received_at_ms - b.received_at_ms);
    return json({ events });
  });
}
