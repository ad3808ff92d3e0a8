/**
 * The billing API after the session archive ran: an invoice whose sessions were partly archived
 * to R2 and deleted from D1 lists the same sessions at the same prices (the CSV byte for byte,
 * every JSON page), and the sessions list says from when on its sessions were archived.
 */

import { env, SELF } from "cloudflare:test";
import { listSessions } from "@aigate/shared";
import { userToken } from "@aigate/test-support";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { archivedInvoiceSessions, chargingInvoice } from "./archivedInvoiceSessions";
import { readRetentionConfig } from "./config";
import { invoiceSessionsPage } from "./queries";
import {
  type ArchivedSession,
  archiveKey,
  gzip,
  runSessionArchive,
  SESSION_COLUMNS,
  sha256Hex,
  toNdjson,
} from "./sessionArchive";

const DAY = 86_400_000;
const PERIOD = Date.UTC(2026, 8, 1);
/** 45 days before it is 2026-09-05: the series' first four days are archived, the rest stays. */
const NOW = Date.UTC(2026, 9, 20, 9);
const CONFIG = readRetentionConfig({});
const quiet = { info() {}, warn() {}, error() {}, child: () => quiet };

async function call(user: string, path: string) {
  return SELF.fetch(`http://api.test${path}`, {
    headers: { authorization: `Bearer ${await userToken(user)}` },
  });
}

async function insertInvoice(user: string, id: string, number: string) {
  await env.DB.prepare(
    `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, status, currency, subtotal_cents,
       total_cents, amount_paid_cents, period_start, period_end, stripe_created, updated_at, number)
     VALUES (?1, ?2, 'cus_x', 'paid', 'usd', 0, 0, 0, ?3, ?3, ?3, 0, ?4)`,
  )
    .bind(id, user, PERIOD, number)
    .run();
}

/**
 * A payg series of September that Stripe billed 5 of 7 sessions on in_a (ranks 1..5), the last
 * two on an adjustment invoiced on in_b; sessions on the 2nd and 3rd (archived) and on the 20th
 * and 28th (kept), an unbillable one on each of two days and a free one.
 */
async function scenario(user: string) {
  await insertInvoice(user, `in_a_${user}`, "A-0001");
  await insertInvoice(user, `in_b_${user}`, "A-0002");
  await env.DB.prepare(
    `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at,
       frozen_at, stripe_billed, billed_seq, adjusted, stripe_invoice_id, stripe_customer_id)
     VALUES (?1, 'payg', ?2, ?2 + 30 * 86400000, 7, 7, 0, ?2 + 31 * 86400000, 5, 5, 2, ?3, 'cus_x')`,
  )
    .bind(user, PERIOD, `in_a_${user}`)
    .run();
  await env.DB.prepare(
    `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
       amount_cents, currency, state, stripe_invoice_item_id, stripe_invoice_id, created_at, updated_at)
     VALUES (?1, ?2, 'payg', ?3, 'cus_x', 2, 5, 7, 20, 'usd', 'created', 'ii_x', ?4, 0, 0)`,
  )
    .bind(`adj_${user}`, user, PERIOD, `in_b_${user}`)
    .run();
  const at = (day: number, hour: number) => PERIOD + (day - 1) * DAY + hour * 3_600_000;
  const rows: Array<[string, number, string, number | null, boolean]> = [
    // id, billing time, plan, seq, billable
    ["s1", at(2, 9), "payg", 1, true],
    ["s2", at(2, 10), "payg", 2, true],
    ["s6", at(2, 23), "payg", 6, true], // judged late: its rank is on the adjustment
    ["f1", at(2, 11), "payg", null, false],
    ["s3", at(3, 8), "payg", 3, true],
    ["free1", at(3, 9), "free", 1, true],
    ["s4", at(20, 8), "payg", 4, true],
    ["s5", at(20, 9), "payg", 5, true],
    ["f2", at(20, 10), "payg", null, false],
    ["s7", at(28, 8), "payg", 7, true],
  ];
  const stmt = env.DB.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at, first_event_at,
       last_event_at, ended_at, audio_ms, open, verdict_at, billable, reason, billed_at, plan, period_start, seq)
     VALUES (?1, ?2, 'proj,"1"', ?3, ?3, ?3, ?3, ?3 + 61000, ?4, 7000, 0, ?3, ?5, ?6, ?3, ?7, ?8, ?9)`,
  );
  const listed = listSessions(
    env.DB,
    rows.map(([id, t]) => ({ user_id: user, session_id: `${id}_${user}`, billed_at: t })),
  );
  await env.DB.batch([
    ...rows.map(([id, t, plan, seq, billable]) =>
      stmt.bind(
        `${id}_${user}`,
        user,
        t,
        id === "s5" ? null : t + 60_000, // one session without an `ended` event
        billable ? 1 : 0,
        billable ? "success" : "too_short",
        plan,
        plan === "free" ? Date.UTC(2026, 8, 1) : PERIOD,
        seq,
      ),
    ),
    ...listed,
  ]);
  // the classifier writes each judged session's daily rollup with its verdict
  await env.DB.prepare(
    `INSERT INTO daily_rollups (user_id, day, reason, sessions, audio_ms)
     SELECT user_id, strftime('%Y-%m-%d', billed_at / 1000, 'unixepoch'), reason, count(*), sum(audio_ms)
     FROM sessions WHERE user_id = ?1 GROUP BY 1, 2, 3`,
  )
    .bind(user)
    .run();
}

async function text(user: string, path: string) {
  const res = await call(user, path);
  expect(res.status, await res.clone().text()).toBe(200);
  return { body: await res.text(), headers: Object.fromEntries(res.headers) };
}

/** Every JSON page at 2 per page, and the CSV, of an invoice. */
async function listings(user: string, invoiceId: string) {
  const pages: string[] = [];
  let cursor: string | null = null;
  do {
    const page = await text(
      user,
      `/api/billing/invoices/${invoiceId}/sessions?limit=2${cursor ? `&cursor=${cursor}` : ""}`,
    );
    pages.push(page.body);
    cursor = (JSON.parse(page.body) as { next_cursor: string | null }).next_cursor;
  } while (cursor && pages.length < 20);
  const csv = await text(user, `/api/billing/invoices/${invoiceId}/sessions?format=csv`);
  return { pages, csv: csv.body, disposition: csv.headers["content-disposition"] };
}

async function remaining(user: string) {
  const { results } = await env.DB.prepare("SELECT session_id FROM sessions WHERE user_id = ?1 ORDER BY 1")
    .bind(user)
    .all<{ session_id: string }>();
  return results.map((r) => r.session_id.split("_")[0]);
}

describe("invoice sessions after the archive", () => {
  it("lists the same sessions at the same prices: the CSV byte for byte, every JSON page", async () => {
    const user = `arch_${crypto.randomUUID().slice(0, 8)}`;
    await scenario(user);
    const before = {
      a: await listings(user, `in_a_${user}`),
      b: await listings(user, `in_b_${user}`),
      rowsA: await invoiceSessionsPage(env.DB, user, `in_a_${user}`, null, 100),
      rowsB: await invoiceSessionsPage(env.DB, user, `in_b_${user}`, null, 100),
    };
    // the scenario charges what it says: 5 on in_a, s6 and s7 on in_b
    expect(before.rowsA.map((r) => r.session_id.split("_")[0])).toEqual(["s1", "s2", "s3", "s4", "s5"]);
    expect(
      before.rowsB.map((r) => [r.session_id.split("_")[0], r.position, r.first_position, r.last_position]),
    ).toEqual([
      ["s6", 6, 6, 7],
      ["s7", 7, 6, 7],
    ]);
    expect(await archivedInvoiceSessions(env.DB, env.ARCHIVE, user, `in_a_${user}`)).toBeNull();

    const run = await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quiet);
    expect(run).toMatchObject({ archived: 2, deleted: 6, waiting: 0 });
    expect(await remaining(user)).toEqual(["f2", "s4", "s5", "s7"]);

    // same rows, positions included, from the archive and D1 together
    expect(await archivedInvoiceSessions(env.DB, env.ARCHIVE, user, `in_a_${user}`)).toEqual(before.rowsA);
    expect(await archivedInvoiceSessions(env.DB, env.ARCHIVE, user, `in_b_${user}`)).toEqual(before.rowsB);
    const after = { a: await listings(user, `in_a_${user}`), b: await listings(user, `in_b_${user}`) };
    expect(after.a).toEqual(before.a);
    expect(after.b).toEqual(before.b);
    expect(after.a.pages.length).toBe(3);
  });

  it("fails rather than list fewer sessions when an archived object is gone", async () => {
    const user = `gone_${crypto.randomUUID().slice(0, 8)}`;
    await scenario(user);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quiet);
    await env.ARCHIVE.delete(archiveKey(user, "2026-09-02"));
    const res = await call(user, `/api/billing/invoices/in_a_${user}/sessions?format=csv`);
    expect(res.status).toBe(500);
    expect(await res.json()).toMatchObject({ error: { code: "internal_error" } });
  });

  it("the sessions list says from when on a user's sessions were archived, and null before any were", async () => {
    const user = `list_${crypto.randomUUID().slice(0, 8)}`;
    await scenario(user);
    const before = await (await call(user, "/api/billing/sessions?limit=100")).json<{
      sessions: unknown[];
      archived_before: string | null;
    }>();
    expect(before.archived_before).toBeNull();
    expect(before.sessions.length).toBe(10);
    await runSessionArchive(env.DB, env.ARCHIVE, CONFIG, NOW, quiet);
    const after = await (await call(user, "/api/billing/sessions?limit=100")).json<typeof before>();
    expect(after.archived_before).toBe("2026-09-04T00:00:00.000Z");
    expect(after.sessions.length).toBe(4);
  });
});

describe("chargingInvoice", () => {
  const series = {
    plan: "payg" as const,
    period_start: 0,
    period_end: 1,
    frozen_at: 1,
    billed_seq: null,
    billable_sessions: 3,
    stripe_billed: 3,
    stripe_invoice_id: "in_s",
    stripe_price_id: null,
  };
  it("puts ranks up to what Stripe billed on the series' invoice, later ones on their adjustment's, none before freezing", () => {
    const adj = [{ plan: "payg", period_start: 0, from_seq: 3, to_seq: 5, stripe_invoice_id: "in_adj" }];
    expect(chargingInvoice(3, series, adj)).toBe("in_s");
    expect(chargingInvoice(4, { ...series, billable_sessions: 5 }, adj)).toBe("in_adj");
    expect(chargingInvoice(6, { ...series, billable_sessions: 6 }, adj)).toBeNull();
    expect(chargingInvoice(1, { ...series, frozen_at: null }, adj)).toBeNull();
    // after a credit: billed_seq is the last rank on the series' invoice
    const credit = [{ plan: "payg", period_start: 0, from_seq: 2, to_seq: 3, stripe_invoice_id: "in_adj" }];
    expect(chargingInvoice(3, { ...series, billed_seq: 2, stripe_billed: 4 }, credit)).toBe("in_adj");
    expect(chargingInvoice(2, { ...series, billed_seq: 2, stripe_billed: 4 }, credit)).toBe("in_s");
  });
});

/** A random state of one user's series, adjustments and sessions, over two months. */
const seriesArb = fc.record({
  billable: fc.integer({ min: 0, max: 10 }),
  holes: fc.integer({ min: 0, max: 2 }),
  unbillable: fc.integer({ min: 0, max: 3 }),
  frozen: fc.boolean(),
  stripeBilled: fc.integer({ min: 0, max: 12 }),
  billedSeq: fc.option(fc.integer({ min: 0, max: 12 }), { nil: null }),
  invoice: fc.constantFrom("in_a", "in_b"),
  adjustments: fc.array(
    fc.record({
      from: fc.integer({ min: 0, max: 12 }),
      span: fc.integer({ min: 1, max: 4 }),
      credit: fc.boolean(),
      invoice: fc.constantFrom("in_a", "in_b", "in_c"),
    }),
    { maxLength: 2 },
  ),
});
const stateArb = fc.record({
  series: fc.array(seriesArb, { minLength: 1, maxLength: 2 }),
  /** Which of the 28 days of each month are archived. */
  archivedDays: fc.uniqueArray(fc.integer({ min: 0, max: 55 }), { maxLength: 40 }),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
});

describe("the archive's answer matches the database's", () => {
  it("for any series, adjustments and archived days: the same rows, positions and invoices as before the archive", async () => {
    await fc.assert(
      fc.asyncProperty(stateArb, async (state) => {
        const user = `prop_${crypto.randomUUID().slice(0, 8)}`;
        const months = [Date.UTC(2026, 6, 1), Date.UTC(2026, 7, 1)];
        const statements: D1PreparedStatement[] = [];
        for (const id of ["in_a", "in_b", "in_c"]) {
          statements.push(
            env.DB.prepare(
              `INSERT INTO invoices (stripe_invoice_id, user_id, stripe_customer_id, status, currency, subtotal_cents,
                 total_cents, amount_paid_cents, period_start, period_end, stripe_created, updated_at)
               VALUES (?1, ?2, 'cus_x', 'paid', 'usd', 0, 0, 0, 0, 0, 0, 0)`,
            ).bind(`${id}_${user}`, user),
          );
        }
        let rand = state.seed;
        const next = () => {
          rand = (rand * 1_103_515_245 + 12_345) % 2_147_483_648;
          return rand;
        };
        state.series.forEach((s, k) => {
          const period = months[k] ?? 0;
          const seqTop = s.billable + s.holes;
          statements.push(
            env.DB.prepare(
              `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at,
                 frozen_at, stripe_billed, billed_seq, adjusted, stripe_invoice_id, stripe_customer_id)
               VALUES (?1, 'payg', ?2, ?2 + 28 * 86400000, ?3, ?4, 0, ?5, ?6, ?7, 0, ?8, 'cus_x')`,
            ).bind(
              user,
              period,
              s.billable,
              seqTop,
              s.frozen ? period + 29 * DAY : null,
              s.frozen ? s.stripeBilled : null,
              s.frozen ? s.billedSeq : null,
              s.frozen ? `${s.invoice}_${user}` : null,
            ),
          );
          s.adjustments.forEach((a, j) => {
            const sessions = a.credit ? -a.span : a.span;
            statements.push(
              env.DB.prepare(
                `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq,
                   to_seq, amount_cents, currency, state, stripe_invoice_item_id, stripe_invoice_id, created_at, updated_at)
                 VALUES (?1, ?2, 'payg', ?3, 'cus_x', ?4, ?5, ?6, 0, 'usd', 'created', 'ii_x', ?7, 0, 0)`,
              ).bind(
                `${user}|${k}|${j}`,
                user,
                period,
                sessions,
                a.from,
                a.from + a.span,
                `${a.invoice}_${user}`,
              ),
            );
          });
          // billable sessions ranked 1..seqTop with `holes` ranks left out, and unbillable ones
          const ranks = Array.from({ length: seqTop }, (_, i) => i + 1);
          for (let h = 0; h < s.holes && ranks.length > 0; h++) ranks.splice(next() % ranks.length, 1);
          const rows = [
            ...ranks.slice(0, s.billable).map((seq) => ({ seq, billable: 1 })),
            ...Array.from({ length: s.unbillable }, () => ({ seq: null, billable: 0 })),
          ];
          rows.forEach((r, i) => {
            const billedAt = period + (next() % 28) * DAY + (next() % 86_400) * 1000;
            const listed = listSessions(env.DB, [
              { user_id: user, session_id: `s${k}_${i}_${user}`, billed_at: billedAt },
            ]);
            statements.push(...listed);
            statements.push(
              env.DB.prepare(
                `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at,
                   first_event_at, last_event_at, ended_at, audio_ms, open, verdict_at, billable, reason, billed_at,
                   plan, period_start, seq)
                 VALUES (?1, ?2, 'p', ?3, ?3, ?3, ?3, ?3 + 5000, ?4, ?5, 0, ?3, ?6, 'r', ?3, 'payg', ?7, ?8)`,
              ).bind(
                `s${k}_${i}_${user}`,
                user,
                billedAt,
                i % 3 === 0 ? null : billedAt + 4000,
                next() % 90_000,
                r.billable,
                period,
                r.seq,
              ),
            );
          });
        });
        await env.DB.batch(statements);

        const invoices = ["in_a", "in_b", "in_c"].map((id) => `${id}_${user}`);
        const before = new Map<string, unknown>();
        for (const id of invoices) before.set(id, await invoiceSessionsPage(env.DB, user, id, null, 10_000));

        // archive the chosen days by hand (whatever their state: the answer must not depend on it)
        for (const d of state.archivedDays) {
          const start = (months[0] ?? 0) + d * DAY;
          const { results } = await env.DB.prepare(
            `SELECT ${SESSION_COLUMNS.join(", ")} FROM sessions WHERE user_id = ?1 AND billed_at >= ?2 AND billed_at < ?3`,
          )
            .bind(user, start, start + DAY)
            .all<ArchivedSession>();
          if (results.length === 0) continue;
          const day = new Date(start).toISOString().slice(0, 10);
          const bytes = await gzip(toNdjson(results));
          const sha = await sha256Hex(bytes);
          await env.ARCHIVE.put(archiveKey(user, day), bytes, { customMetadata: { sha256: sha } });
          await env.DB.batch([
            env.DB.prepare(
              `INSERT INTO session_archives (user_id, day, object_key, row_count, byte_size, sha256, first_session_id,
                 last_session_id, archived_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'x', 'y', 0)`,
            ).bind(user, day, archiveKey(user, day), results.length, bytes.length, sha),
            env.DB.prepare(
              "DELETE FROM sessions WHERE user_id = ?1 AND billed_at >= ?2 AND billed_at < ?3",
            ).bind(user, start, start + DAY),
          ]);
        }

        for (const id of invoices) {
          const archived = await archivedInvoiceSessions(env.DB, env.ARCHIVE, user, id);
          const answer = archived ?? (await invoiceSessionsPage(env.DB, user, id, null, 10_000));
          expect(answer, id).toEqual(before.get(id));
        }
      }),
      { numRuns: 40 },
    );
  });
});
