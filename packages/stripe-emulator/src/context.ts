/** What every route needs: state, webhooks, the base URL, and a typed hono app. */
import type { Context, Hono } from "hono";
import { jsonResponse } from "./errors";
import { applyExpand } from "./expand";
import type { Params } from "./params";
import type { EmulatorState } from "./state";
import {
  checkoutSessionView,
  customerView,
  invoiceItemView,
  invoiceView,
  meterView,
  priceView,
  productView,
  scheduleView,
  subscriptionView,
  testClockView,
} from "./views";
import type { RequestInfo, Webhooks } from "./webhooks";

export interface Ctx {
  state: EmulatorState;
  webhooks: Webhooks;
  /** e.g. http://127.0.0.1:12111 (known once the server listens). */
  baseUrl(): string;
}

export type Env = {
  Variables: {
    requestId: string;
    params: Params;
    request: RequestInfo;
    replayed: boolean;
  };
};

export type App = Hono<Env>;
export type C = Context<Env>;

/** Renders any object by id, for `expand[]`. */
export function resolveId(ctx: Ctx, id: string): unknown {
  const { state } = ctx;
  if (id.startsWith("sub_sched_")) {
    const sc = state.schedules.get(id);
    return sc && scheduleView(state, sc);
  }
  const prefix = id.slice(0, id.indexOf("_"));
  switch (prefix) {
    case "cus": {
      const c = state.customers.get(id);
      return c && customerView(c);
    }
    case "prod": {
      const p = state.products.get(id);
      return p && productView(p);
    }
    case "price": {
      const p = state.prices.get(id);
      return p && priceView(p);
    }
    case "mtr": {
      const m = state.meters.get(id);
      return m && meterView(m);
    }
    case "sub": {
      const s = state.subscriptions.get(id);
      return s && subscriptionView(state, s);
    }
    case "in": {
      const i = state.invoices.get(id);
      return i && invoiceView(state, i);
    }
    case "ii": {
      const i = state.invoiceItems.get(id);
      return i && invoiceItemView(state, i);
    }
    case "clock": {
      const t = state.testClocks.get(id);
      return t && testClockView(t);
    }
    case "cs": {
      const s = state.checkoutSessions.get(id);
      return s && checkoutSessionView(state, s, ctx.baseUrl());
    }
    default:
      return undefined;
  }
}

/** A Stripe API response: applies the request's `expand[]` (and strips unexpanded includables). */
export function send(c: C, ctx: Ctx, body: unknown): Response {
  const expand = c.get("params").expand();
  return jsonResponse(applyExpand(body, expand, (id) => resolveId(ctx, id)));
}

export function requestInfo(c: C): RequestInfo {
  return c.get("request");
}
