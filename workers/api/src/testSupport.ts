/** Test helpers (imported by tests only): user tokens and D1 fixtures. */
import { SignJWT } from "jose";

export const TEST_USER_TOKEN_SECRET = "test-user-token-secret";

/** A user token as the app's backend mints it: HS256, sub, exp (default in an hour). */
export async function userToken(
  sub: string,
  opts: { secret?: string; expiresIn?: string | number | null; alg?: "HS256" | "HS512" } = {},
): Promise<string> {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: opts.alg ?? "HS256" })
    .setSubject(sub)
    .setIssuedAt();
  if (opts.expiresIn !== null) jwt.setExpirationTime(opts.expiresIn ?? "1h");
  return jwt.sign(new TextEncoder().encode(opts.secret ?? TEST_USER_TOKEN_SECRET));
}

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
