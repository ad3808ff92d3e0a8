/** Test helpers (imported by tests only): D1 fixtures. */

export interface UsageFixture {
  id: string;
  user: string;
  createdAt: number;
  status?: "success" | "failed";
  reason?: string;
  plan?: "free" | "payg" | "pro";
  periodStart?: number;
  charged?: boolean;
  invoiceId?: string | null;
}

export async function insertSessionUsage(db: D1Database, rows: UsageFixture[]): Promise<void> {
  const stmt = db.prepare(
    `INSERT INTO session_usage (id, user_id, project_id, session_id, status, duration_ms, charged, stripe_invoice_id,
       created_at, reason, rule_version, plan, period_start, period_end, record_token, recorded_at)
     VALUES (?1, ?2, 'proj_1', ?1, ?3, 6000, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, 'tok', ?6)`,
  );
  await db.batch(
    rows.map((r) => {
      const status = r.status ?? "success";
      const periodStart = r.periodStart ?? 0;
      return stmt.bind(
        r.id,
        r.user,
        status,
        r.charged ? 1 : 0,
        r.invoiceId ?? null,
        r.createdAt,
        r.reason ?? (status === "success" ? "success" : "too_short"),
        r.plan ?? "free",
        periodStart,
        periodStart + 31 * 86_400_000,
      );
    }),
  );
}
