/**
 * Billing meter semantics: validating and recording meter events (identifier dedupe over a
 * rolling 24 h of emulator time), and aggregating them per formula over [start, end).
 */
import { invalidRequest, missingParam } from "./errors";
import type { Params } from "./params";
import type { MeterUsage } from "./protocol";
import { DAY, type EmulatorState, type MeterEventRec, type MeterRec, randomString } from "./state";

export const PAST_LIMIT_SECONDS = 35 * DAY;
export const FUTURE_LIMIT_SECONDS = 5 * 60;

export function activeMeterFor(state: EmulatorState, eventName: string): MeterRec | undefined {
  for (const m of state.meters.values()) {
    if (m.eventName === eventName && m.status === "active") return m;
  }
  return undefined;
}

export interface ValidatedMeterEvent {
  meter: MeterRec;
  rec: MeterEventRec;
}

/** Validates a POST /v1/billing/meter_events body like Stripe (400s with meter error codes). */
export function validateMeterEvent(state: EmulatorState, p: Params): ValidatedMeterEvent {
  const eventName = p.string("event_name");
  const meter = activeMeterFor(state, eventName);
  if (!meter) {
    const inactive = [...state.meters.values()].some((m) => m.eventName === eventName);
    throw inactive
      ? invalidRequest(`The meter for event name '${eventName}' is inactive.`, "archived_meter", "event_name")
      : invalidRequest(`No active meter was found with event name '${eventName}'.`, "no_meter", "event_name");
  }
  const payload = p.stringMap("payload");
  if (!payload) throw missingParam("payload");
  const customerParam = `payload[${meter.customerKey}]`;
  const customer = payload[meter.customerKey];
  if (!customer) {
    throw invalidRequest(
      `The payload is missing the customer mapping key '${meter.customerKey}'.`,
      "meter_event_no_customer_defined",
      customerParam,
    );
  }
  if (!state.customers.has(customer)) {
    throw invalidRequest(`No such customer: '${customer}'`, "meter_event_customer_not_found", customerParam);
  }
  const value = parseValue(meter, payload[meter.valueKey]);
  const now = state.now();
  // A customer on a test clock lives at the clock's frozen time: its events default to, and are
  // checked against, that time (UNCONFIRMED: Stripe's docs do not say; see README).
  const customerNow = state.nowFor(customer);
  const timestamp = p.optInt("timestamp") ?? customerNow;
  if (timestamp < customerNow - PAST_LIMIT_SECONDS) {
    throw invalidRequest(
      "Timestamp must be within the past 35 calendar days.",
      "timestamp_too_far_in_past",
      "timestamp",
    );
  }
  if (timestamp > customerNow + FUTURE_LIMIT_SECONDS) {
    throw invalidRequest(
      "Timestamp must not be more than 5 minutes in the future.",
      "timestamp_in_future",
      "timestamp",
    );
  }
  const identifier = p.optString("identifier") || `emu_${randomString(24)}`;
  if (identifier.length > 100) {
    throw invalidRequest("identifier must be at most 100 characters.", undefined, "identifier");
  }
  return {
    meter,
    rec: {
      seq: state.nextSeq(),
      meter: meter.id,
      eventName,
      identifier,
      customer,
      value,
      timestamp,
      created: now,
      receivedAtMs: Date.now(),
      payload,
    },
  };

  function parseValue(m: MeterRec, raw: string | undefined): number {
    const param = `payload[${m.valueKey}]`;
    if (raw === undefined) {
      if (m.formula === "count") return 1;
      throw missingParam(param);
    }
    if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) {
      throw invalidRequest(
        `Meter event values must be whole numbers; got '${raw}'.`,
        "meter_event_invalid_value",
        param,
      );
    }
    return Number(raw);
  }
}

/**
 * Records a validated event unless its identifier was accepted in the last 24 h, in which case
 * it is kept aside as a duplicate and a 400 is thrown (what Stripe answers for a duplicate).
 */
export function recordMeterEvent(state: EmulatorState, rec: MeterEventRec): void {
  const firstSeen = state.meterIdentifiers.get(rec.identifier);
  if (firstSeen !== undefined && rec.created - firstSeen < DAY) {
    state.duplicateMeterEvents.push(rec);
    throw invalidRequest(
      `An event already exists with identifier ${rec.identifier}.`,
      undefined,
      "identifier",
    );
  }
  if (state.meterIdentifiers.size % 10_000 === 0) forgetOldIdentifiers(state, rec.created);
  state.meterIdentifiers.set(rec.identifier, rec.created);
  state.meterEvents.push(rec);
  const key = `${rec.meter}:${rec.customer}`;
  const list = state.meterEventsByKey.get(key);
  if (list) list.push(rec);
  else state.meterEventsByKey.set(key, [rec]);
}

/** Identifiers older than the 24 h window no longer matter. */
function forgetOldIdentifiers(state: EmulatorState, now: number): void {
  for (const [identifier, firstSeen] of state.meterIdentifiers) {
    if (now - firstSeen >= DAY) state.meterIdentifiers.delete(identifier);
  }
}

function inWindow(e: MeterEventRec, meter: string, customer: string, start: number, end: number): boolean {
  return e.meter === meter && e.customer === customer && e.timestamp >= start && e.timestamp < end;
}

/** Aggregates a customer's events with start <= timestamp < end per the meter's formula. */
export function aggregate(
  state: EmulatorState,
  meter: MeterRec,
  customer: string,
  start: number,
  end: number,
): number {
  const all = state.meterEventsByKey.get(`${meter.id}:${customer}`) ?? [];
  return aggregateEvents(
    meter,
    all.filter((e) => inWindow(e, meter.id, customer, start, end)),
  );
}

export function aggregateEvents(meter: MeterRec, events: MeterEventRec[]): number {
  switch (meter.formula) {
    case "count":
      return events.length;
    case "sum":
      return events.reduce((sum, e) => sum + e.value, 0);
    case "last": {
      let last: MeterEventRec | undefined;
      for (const e of events) {
        if (!last || e.timestamp > last.timestamp || (e.timestamp === last.timestamp && e.seq > last.seq))
          last = e;
      }
      return last?.value ?? 0;
    }
  }
}

/** Usage straight from state, for GET /_emulator/meters/{event_name}/usage. */
export function usageByCustomer(
  state: EmulatorState,
  meter: MeterRec,
  start: number,
  end: number,
  customer?: string,
): Record<string, MeterUsage> {
  const counted = new Map<string, MeterEventRec[]>();
  const duplicates = new Map<string, number>();
  if (customer !== undefined) counted.set(customer, []);
  const wanted = (e: MeterEventRec) => customer === undefined || e.customer === customer;
  for (const e of state.meterEvents) {
    if (!wanted(e) || !inWindow(e, meter.id, e.customer, start, end)) continue;
    const list = counted.get(e.customer) ?? [];
    list.push(e);
    counted.set(e.customer, list);
  }
  for (const e of state.duplicateMeterEvents) {
    if (!wanted(e) || !inWindow(e, meter.id, e.customer, start, end)) continue;
    duplicates.set(e.customer, (duplicates.get(e.customer) ?? 0) + 1);
    if (!counted.has(e.customer)) counted.set(e.customer, []);
  }
  const out: Record<string, MeterUsage> = {};
  for (const [cus, events] of counted) {
    out[cus] = {
      value: aggregateEvents(meter, events),
      events: events.length,
      duplicates_ignored: duplicates.get(cus) ?? 0,
    };
  }
  return out;
}
