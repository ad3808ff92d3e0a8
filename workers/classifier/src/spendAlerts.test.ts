/**
 * Spend alert thresholds are crossed where usage grows: in the verdict batch, with the series'
 * count. Each (user, series, threshold) is recorded once, whatever runs judge the sessions again.
 */
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { readConfig } from "./config";
import { judgeSessions } from "./judging";
import { harness, paidAccount, storeSessions, T0, TEST_VARS } from "./test/support";

const PERIOD_START = Date.UTC(2026, 4, 3);

async function setLimits(
  user: string,
  capCents: number | null,
  thresholds: number[],
  url: string | null = null,
) {
  await env.DB.prepare(
    `INSERT INTO spend_limits (user_id, monthly_cap_cents, alert_thresholds, alert_url, alert_secret, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, 0)`,
  )
    .bind(user, capCents, JSON.stringify(thresholds), url, url === null ? null : "aigwhsec_test")
    .run();
}

async function alerts(user: string) {
  const { results } = await env.DB.prepare(
    `SELECT plan, period_start, threshold, cap_cents, usage_cents, sessions, crossed_at, delivery, next_attempt_at
     FROM spend_alerts WHERE user_id = ?1 ORDER BY threshold`,
  )
    .bind(user)
    .all();
  return results;
}

async function judge(h: ReturnType<typeof harness>, ids: string[], now: number) {
  return judgeSessions(h.env.DB, { verdicts: h.verdicts }, ids, now, readConfig(TEST_VARS));
}

describe("spend alert crossings in the verdict batch", () => {
  it("records each threshold once, when the judged sessions make the series' charges reach it", async () => {
    const h = harness();
    await paidAccount("u-cap");
    await setLimits("u-cap", 50, [40, 80, 100], "https://example.com/hook"); // 50 c: 5 payg sessions
    await storeSessions(
      Array.from({ length: 6 }, (_, i) => ({ id: `c-${i}`, user: "u-cap", firstSeen: T0 + i })),
    );
    const t1 = T0 + 3_600_000;
    await judge(h, ["c-0"], t1); // 10 c: 20 %
    expect(await alerts("u-cap")).toEqual([]);
    await judge(h, ["c-1", "c-2"], t1 + 1); // 30 c: 60 % -> 40 %
    await judge(h, ["c-1", "c-2"], t1 + 2); // judged again (a redelivered reminder): nothing new
    await judge(h, ["c-3", "c-4", "c-5"], t1 + 3); // 60 c: 120 % -> 80 %, 100 %
    const base = { plan: "payg", period_start: PERIOD_START, cap_cents: 50, delivery: "pending" };
    expect(await alerts("u-cap")).toEqual([
      { ...base, threshold: 40, usage_cents: 30, sessions: 3, crossed_at: t1 + 1, next_attempt_at: t1 + 1 },
      { ...base, threshold: 80, usage_cents: 60, sessions: 6, crossed_at: t1 + 3, next_attempt_at: t1 + 3 },
      { ...base, threshold: 100, usage_cents: 60, sessions: 6, crossed_at: t1 + 3, next_attempt_at: t1 + 3 },
    ]);
  });

  it("counts pro's overage only, and records nothing for users without a cap", async () => {
    const h = harness();
    await paidAccount("u-pro", { plan: "pro" });
    await paidAccount("u-nocap");
    await setLimits("u-pro", 7, [100]);
    await setLimits("u-nocap", null, [50]);
    await env.DB.prepare(
      `INSERT INTO usage_periods (user_id, plan, period_start, period_end, billable_sessions, seq_top, updated_at)
       VALUES ('u-pro', 'pro', ?1, ?2, 399, 399, 0)`,
    )
      .bind(PERIOD_START, Date.UTC(2026, 5, 3))
      .run();
    await storeSessions([
      { id: "p-400", user: "u-pro", firstSeen: T0 },
      { id: "p-401", user: "u-pro", firstSeen: T0 + 1 },
      { id: "n-1", user: "u-nocap", firstSeen: T0 },
    ]);
    await judge(h, ["p-400", "n-1"], T0 + 3_600_000); // the 400th is included: 0 c
    expect(await alerts("u-pro")).toEqual([]);
    await judge(h, ["p-401"], T0 + 3_600_001); // 7 c: the cap
    expect(await alerts("u-pro")).toMatchObject([
      { plan: "pro", threshold: 100, usage_cents: 7, sessions: 401, delivery: "none" },
    ]);
    expect(await alerts("u-nocap")).toEqual([]);
  });
});
