/**
 * Reading the end state: a consistent D1 snapshot, what the Stripe emulator's meter holds per
 * customer, and what the billing API tells each user. Also waiting for the pipeline to go quiet.
 */
import { isRecord, type Row, type StackClient, sleep, str } from "./clients";
import {
  type Expectations,
  type MeterView,
  type Observations,
  PAID_PLANS,
  type PaidPlanName,
  pendingWork,
  type SessionsApiView,
  SNAPSHOT_QUERIES,
  type Snapshot,
  toSnapshot,
  type UsageApiView,
} from "./invariants";

export async function snapshot(client: StackClient): Promise<Snapshot> {
  return toSnapshot(await client.sql(SNAPSHOT_QUERIES));
}

/**
 * Waits until every expected session is judged and recorded, nothing is open, every paid total is
 * confirmed by Stripe and every hijack event is parked; crons are forced every few seconds.
 * Returns the last snapshot and what was still pending when time ran out (nothing, normally).
 */
export async function quiesce(
  client: StackClient,
  exp: Expectations,
  timeoutMs: number,
): Promise<{ snap: Snapshot; pending: string[] }> {
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    const snap = await snapshot(client);
    const pending = pendingWork(exp, snap);
    const parked = snap.deadLetters.filter((d) => d.error.startsWith("user_mismatch")).length;
    if (parked < exp.hijacks.length) pending.push(`${parked}/${exp.hijacks.length} hijack events parked`);
    if (pending.length === 0 || Date.now() > deadline) return { snap, pending };
    if (round % 3 === 2) await Promise.all([client.tick("classifier"), client.tick("biller")]);
    await sleep(1000);
  }
}

function numberField(body: unknown, key: string): number {
  const v = isRecord(body) ? body[key] : undefined;
  return typeof v === "number" ? v : Number.NaN;
}

export async function observe(
  client: StackClient,
  exp: Expectations,
  snap: Snapshot,
  meters: Record<PaidPlanName, string>,
): Promise<Observations> {
  const meter = new Map<string, Record<PaidPlanName, MeterView>>();
  const customers = new Set(snap.customers.values());
  for (const plan of PAID_PLANS) {
    const byCustomer = await client.emulator.meterUsageByCustomer(meters[plan]);
    for (const c of Object.keys(byCustomer.customers)) customers.add(c);
  }
  for (const customer of customers) {
    const views = {} as Record<PaidPlanName, MeterView>;
    for (const plan of PAID_PLANS) {
      const usage = await client.emulator.meterUsage(meters[plan], { customer });
      const events = await client.emulator.meterEvents(meters[plan], customer);
      views[plan] = { value: usage.value, maxPosted: Math.max(0, ...events.map((e) => e.value)) };
    }
    meter.set(customer, views);
  }
  const usageApi = new Map<string, UsageApiView>();
  const sessionsApi = new Map<string, SessionsApiView>();
  for (const user of exp.users) {
    const usage = await client.asUser(user.id, "/api/billing/usage");
    if (usage.status === 200 && isRecord(usage.body)) {
      const quota = usage.body.quota;
      usageApi.set(user.id, {
        plan: String(usage.body.plan),
        sessions_this_month: numberField(usage.body, "sessions_this_month"),
        failed_sessions: numberField(usage.body, "failed_sessions"),
        quota: typeof quota === "number" ? quota : null,
        estimated_cost_cents: numberField(usage.body, "estimated_cost_cents"),
        active_sessions: numberField(usage.body, "active_sessions"),
      });
    }
    const listed: SessionsApiView = { ids: [], billable: 0 };
    let cursor: string | null = null;
    for (let page = 0; page < 1000; page++) {
      const query: string = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
      const res = await client.asUser(user.id, `/api/billing/sessions?limit=100${query}`);
      const body = res.body;
      if (res.status !== 200 || !isRecord(body) || !Array.isArray(body.sessions)) break;
      for (const s of body.sessions) {
        if (!isRecord(s)) continue;
        listed.ids.push(String(s.session_id));
        if (s.billable === true) listed.billable += 1;
      }
      cursor = typeof body.next_cursor === "string" ? body.next_cursor : null;
      if (cursor === null) break;
    }
    sessionsApi.set(user.id, listed);
  }
  return { meter, usageApi, sessionsApi };
}

/** Every table's rows (for "no state change"), except what crons write on their own. */
export async function dumpD1(client: StackClient): Promise<Record<string, Row[]>> {
  // every shard has the same tables: each name once
  const names = await client.one(
    `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'
     AND name NOT IN ('d1_migrations', 'reconciliation_runs') ORDER BY name`,
  );
  const tables = [...new Set(names.map((r) => str(r, "name")))];
  const rows = await client.sql(tables.map((t) => ({ sql: `SELECT * FROM "${t}"` })));
  return Object.fromEntries(tables.map((t, i) => [t, rows[i] ?? []]));
}
