/**
 * Driving one customer through a subscription's lifecycle on the whole stack whose clock follows
 * the Stripe emulator's (stack-setup.ts `emulatorClock`): sessions sent at the shared time, the
 * pipeline waited for, periods ended by moving the clock, invoices read from Stripe.
 */
import { EmulatorClient } from "@aigate/stripe-emulator/client";
import { DEV_SECRETS } from "@aigate/test-support";
import { SignJWT } from "jose";
import Stripe from "stripe";
import { expect, inject } from "vitest";
import { eventually, postEvents, sessionEvents, stackUrl } from "../e2e/helpers";

export const emulator = () => new EmulatorClient(inject("stripeUrl"));

export function stripe(): Stripe {
  const url = new URL(inject("stripeUrl"));
  return new Stripe("sk_test_emulator", {
    host: url.hostname,
    port: Number(url.port),
    protocol: "http",
    httpClient: Stripe.createFetchHttpClient(),
    maxNetworkRetries: 0,
  });
}

/** The shared time (the emulator's clock, which the workers follow), in ms. */
export async function now(): Promise<number> {
  return (await emulator().clock()).now * 1000;
}

/** A user token valid at the shared time (the workers check `exp` against it). */
async function tokenFor(userId: string): Promise<string> {
  const t = Math.floor((await now()) / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(userId)
    .setIssuedAt(t)
    .setExpirationTime(t + 3600)
    .sign(new TextEncoder().encode(DEV_SECRETS.USER_TOKEN_SECRET));
}

export async function asUser(userId: string, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${await tokenFor(userId)}`);
  if (init.body) headers.set("content-type", "application/json");
  return fetch(stackUrl(path), { ...init, headers });
}

export async function sql<T>(query: string): Promise<T[]> {
  const res = await fetch(stackUrl("/__dev/query"), { method: "POST", body: JSON.stringify({ sql: query }) });
  if (res.status !== 200) throw new Error(`query failed (${res.status}): ${await res.text()}`);
  return ((await res.json()) as { results: T[] }).results;
}

const q = (s: string) => `'${s.replaceAll("'", "''")}'`;

export interface Usage {
  plan: string;
  sessions_this_month: number;
  estimated_cost_cents: number;
  pending_plan: string | null;
  pending_effective_at: string | null;
  period_start: string;
  period_end: string;
}

export async function usage(userId: string): Promise<Usage> {
  return (await (await asUser(userId, "/api/billing/usage")).json()) as Usage;
}

/** Subscribes a user through Checkout, completed in the emulator; waits for the plan in D1. */
export async function subscribe(
  userId: string,
  plan: "payg" | "pro",
): Promise<{ customer: string; subscription: string }> {
  const res = await asUser(userId, "/api/billing/checkout", {
    method: "POST",
    body: JSON.stringify({ plan }),
  });
  expect(res.status).toBe(200);
  const { id } = (await res.json()) as { id: string };
  const done = await emulator().completeCheckout(id);
  await eventually(
    () => usage(userId),
    (u) => u.plan === plan,
  );
  return { customer: done.subscription.customer, subscription: done.subscription.id };
}

let counter = 0;

/** Sends `n` sessions that worked, created now (shared time); returns their ids. */
export async function runSessions(
  userId: string,
  n: number,
  opts: { ended?: boolean } = {},
): Promise<string[]> {
  // created now: after any change the test just made (billed at the first receipt at the latest)
  const start = await now();
  const ids: string[] = [];
  const events: unknown[] = [];
  for (let i = 0; i < n; i++) {
    counter += 1;
    const sessionId = `${userId}-s${counter}`;
    ids.push(sessionId);
    const all = sessionEvents({ sessionId, userId, start, audioMs: 6000 });
    events.push(...(opts.ended === false ? all.filter((e) => e.type !== "aigate.session.ended") : all));
  }
  for (let i = 0; i < events.length; i += 400) {
    const res = await postEvents(events.slice(i, i + 400));
    expect(res.status).toBe(202);
  }
  return ids;
}

/** Ends sessions sent with `ended: false`. */
export async function endSessions(userId: string, ids: string[]): Promise<void> {
  const at = new Date((await now()) - 1000).toISOString();
  const events = ids.map((sessionId) => ({
    specversion: "1.0",
    source: "gw-e2e",
    subject: sessionId,
    id: `${sessionId}-late-end`,
    type: "aigate.session.ended",
    time: at,
    data: { user_id: userId, project_id: "proj-1", audio_ms: 6000 },
  }));
  expect((await postEvents(events)).status).toBe(202);
}

/** Waits until the plan's current series of the user counts `n` sessions and Stripe confirmed it. */
export async function waitPosted(userId: string, plan: "payg" | "pro", n: number): Promise<void> {
  await eventually(
    () =>
      sql<{ billable_sessions: number; posted_total: number }>(
        `SELECT billable_sessions, posted_total FROM usage_periods WHERE user_id = ${q(userId)} AND plan = ${q(plan)}
         ORDER BY period_start DESC LIMIT 1`,
      ),
    (rows) => rows[0]?.billable_sessions === n && rows[0]?.posted_total === n,
    90_000,
  );
}

/** Waits until every listed session has its verdict. */
export async function waitJudged(ids: string[]): Promise<void> {
  const list = ids.map(q).join(",");
  await eventually(
    () =>
      sql<{ n: number }>(
        `SELECT count(*) AS n FROM sessions WHERE session_id IN (${list}) AND verdict_at IS NOT NULL`,
      ),
    (rows) => rows[0]?.n === ids.length,
    60_000,
  );
}

export async function changePlan(userId: string, body: unknown) {
  const res = await asUser(userId, "/api/billing/plan", { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Moves the shared clock forward; the emulator runs what fell due (renewals, phases, finalizations). */
export async function advance(seconds: number): Promise<void> {
  await emulator().advanceClock(seconds);
}

export interface InvoiceSummary {
  id: string;
  billing_reason: string | null;
  status: string;
  total: number;
  lines: { description: string | null; amount: number; quantity: number | null }[];
}

/** The customer's invoices, oldest first. */
export async function invoices(customer: string): Promise<InvoiceSummary[]> {
  const out: InvoiceSummary[] = [];
  for await (const inv of stripe().invoices.list({ customer, limit: 100 })) {
    out.push({
      id: inv.id,
      billing_reason: inv.billing_reason,
      status: inv.status ?? "",
      total: inv.total,
      lines: inv.lines.data.map((l) => ({
        description: l.description,
        amount: l.amount,
        quantity: l.quantity,
      })),
    });
  }
  return out.reverse();
}

/** Waits for the subscription's D1 state to show a condition (webhooks delivered and applied). */
export async function waitUsage(userId: string, done: (u: Usage) => boolean): Promise<Usage> {
  return eventually(() => usage(userId), done, 60_000);
}

/** Invoices are finalized as soon as they are due (no grace): tests read them at once. */
export async function finalizeWithoutGrace(): Promise<void> {
  await emulator().setInvoiceSettings({ finalization_grace_seconds: 0 });
}
