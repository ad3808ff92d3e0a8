/** Test helpers (imported by tests only): D1 fixtures. */
import { listSessions } from "@aigate/shared";

export interface JudgedFixture {
  id: string;
  user: string;
  /** The session's billing time. */
  billedAt: number;
  status?: "success" | "failed";
  reason?: string;
  plan?: "free" | "payg" | "pro";
  periodStart?: number;
  /** Its rank in its series (billable sessions of paid plans). */
  seq?: number | null;
}

/** Sessions as the classifier records them once judged: verdict, billing time, plan, period, rank, and listed. */
export async function insertJudged(db: D1Database, rows: JudgedFixture[]): Promise<void> {
  const stmt = db.prepare(
    `INSERT INTO sessions (session_id, user_id, project_id, first_seen_at, last_seen_at, created_at, audio_ms,
       open, verdict_at, billable, reason, billed_at, plan, period_start, seq)
     VALUES (?1, ?2, 'proj_1', ?3, ?3, ?3, 6000, 0, ?3, ?4, ?5, ?3, ?6, ?7, ?8)`,
  );
  const listed = listSessions(
    db,
    rows.map((r) => ({ user_id: r.user, session_id: r.id, billed_at: r.billedAt })),
  );
  await db.batch([
    ...rows.map((r) => {
      const status = r.status ?? "success";
      return stmt.bind(
        r.id,
        r.user,
        r.billedAt,
        status === "success" ? 1 : 0,
        r.reason ?? (status === "success" ? "success" : "too_short"),
        r.plan ?? "free",
        r.periodStart ?? 0,
        r.seq ?? null,
      );
    }),
    ...listed,
  ]);
}

/** A paid series as the pipeline leaves it once an invoice froze it (Stripe billed `stripeBilled`). */
export async function insertFrozenSeries(
  db: D1Database,
  s: {
    user: string;
    plan: "payg" | "pro";
    periodStart: number;
    billable: number;
    stripeBilled: number;
    invoiceId: string;
  },
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at,
         frozen_at, stripe_billed, billed_seq, stripe_invoice_id)
       VALUES (?1, ?2, ?3, ?3 + 2678400000, ?4, ?4, 0, 1, ?5, ?5, ?6)`,
    )
    .bind(s.user, s.plan, s.periodStart, s.billable, s.stripeBilled, s.invoiceId)
    .run();
}

/** An adjustment billing ranks (from, to] of a series, carried by a finalized invoice. */
export async function insertAdjustment(
  db: D1Database,
  a: { user: string; plan: "payg" | "pro"; periodStart: number; from: number; to: number; invoiceId: string },
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO usage_adjustments (id, user_id, plan, period_start, stripe_customer_id, sessions, from_seq, to_seq,
         amount_cents, currency, state, stripe_invoice_item_id, stripe_invoice_id, created_at, updated_at)
       VALUES (?1, ?2, ?3, ?4, 'cus_x', ?6 - ?5, ?5, ?6, (?6 - ?5) * 10, 'usd', 'created', 'ii_x', ?7, 0, 0)`,
    )
    .bind(
      `${a.user}|${a.plan}|${a.periodStart}|${a.from}|${a.to}`,
      a.user,
      a.plan,
      a.periodStart,
      a.from,
      a.to,
      a.invoiceId,
    )
    .run();
}
