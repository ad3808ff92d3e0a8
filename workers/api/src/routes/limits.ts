/**
 * Spend caps and alerts, for end users holding a user token (docs/api-billing.md):
 * GET/PUT /api/billing/limits, PUT/DELETE /api/billing/alert-endpoint.
 */
import {
  accountStatus,
  badRequest,
  calendarMonth,
  capSessions,
  describeIssues,
  isPaidPlan,
  issueDetails,
  type PaidPlanId,
  SpendLimitsBody,
  usageChargeCents,
} from "@aigate/shared";
import { type Context, Hono } from "hono";
import { z } from "zod";
import { verifyUserToken } from "../auth";
import type { ApiEnv } from "../context";
import { billableSessions } from "../queries";
import { readSpendLimits, seriesAlerts, writeAlertEndpoint, writeSpendLimits } from "../spendLimits";

export const limits = new Hono<ApiEnv>();

/** Verified per route, not by a middleware, so the routes are safe wherever they are mounted. */
const userAuth = async (c: Context<ApiEnv>, next: () => Promise<void>) => {
  const userId = await verifyUserToken(c.req.header("authorization"), c.var.config.userTokenSecret);
  c.set("userId", userId);
  c.set("log", c.get("log").child({ user_id: userId }));
  await next();
};

/** Like parseInput, with the issues in the message too: the billing page shows it as it is. */
function parseLimits<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const message = input === undefined ? "the body is not JSON" : describeIssues(parsed.error);
  throw badRequest("invalid_request", message, issueDetails(parsed.error));
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The limits, where the current period stands against them, and the thresholds crossed in it. */
async function limitsBody(c: Context<ApiEnv>) {
  const userId = c.get("userId");
  const db = c.var.shards.of(userId);
  const now = Date.now();
  const [account, spend] = await Promise.all([
    accountStatus(db, userId, now, c.var.config.pastDueGraceDays),
    readSpendLimits(db, userId),
  ]);
  // the series admission counts: the current paid series, or the free month (usage costs nothing)
  const paid: PaidPlanId | null = isPaidPlan(account.limitsPlan) ? account.limitsPlan : null;
  const period = paid ? account.currentPeriod : calendarMonth(now);
  const plan = paid ?? "free";
  const [sessions, alerts] = await Promise.all([
    billableSessions(db, userId, plan, period.start),
    seriesAlerts(db, userId, plan, period.start),
  ]);
  return {
    monthly_cap_cents: spend.monthlyCapCents,
    alert_thresholds: spend.alertThresholds,
    alert_endpoint:
      spend.alertUrl === null ? null : { url: spend.alertUrl, registered_at: iso(spend.alertEndpointAt) },
    currency: "usd",
    plan,
    period_start: new Date(period.start).toISOString(),
    period_end: new Date(period.end).toISOString(),
    sessions_this_period: sessions,
    usage_cents: paid ? usageChargeCents(paid, sessions) : 0,
    cap_sessions: paid && spend.monthlyCapCents !== null ? capSessions(paid, spend.monthlyCapCents) : null,
    alerts: alerts.map((a) => ({
      threshold: a.threshold,
      crossed_at: new Date(a.crossed_at).toISOString(),
      usage_cents: a.usage_cents,
      cap_cents: a.cap_cents,
      sessions: a.sessions,
      delivery: a.delivery,
      delivered_at: iso(a.delivered_at),
    })),
  };
}

limits.get("/limits", userAuth, async (c) => c.json(await limitsBody(c)));

limits.put("/limits", userAuth, async (c) => {
  const body = parseLimits(SpendLimitsBody, await c.req.json().catch(() => undefined));
  const userId = c.get("userId");
  await writeSpendLimits(
    c.var.shards.of(userId),
    userId,
    { monthlyCapCents: body.monthly_cap_cents, alertThresholds: body.alert_thresholds },
    Date.now(),
  );
  c.get("log").info("spend limits set", {
    monthly_cap_cents: body.monthly_cap_cents,
    alert_thresholds: body.alert_thresholds,
  });
  return c.json(await limitsBody(c));
});

const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** An alert endpoint: https, or plain http to this machine when local http is allowed (dev). */
export function alertEndpointBody(allowLocalHttp: boolean) {
  return z
    .object({ url: z.string().max(2000) })
    .strict()
    .superRefine((body, ctx) => {
      let url: URL;
      try {
        url = new URL(body.url);
      } catch {
        ctx.addIssue({ code: "custom", path: ["url"], message: "not a URL" });
        return;
      }
      if (url.username || url.password) {
        ctx.addIssue({ code: "custom", path: ["url"], message: "the URL must not carry credentials" });
      }
      const localHttp = allowLocalHttp && url.protocol === "http:" && LOCAL_HOSTS.has(url.hostname);
      if (url.protocol !== "https:" && !localHttp) {
        ctx.addIssue({
          code: "custom",
          path: ["url"],
          message: allowLocalHttp
            ? "the URL must be https (or http on localhost / 127.0.0.1)"
            : "the URL must be https",
        });
      }
    });
}

/** A new signing secret: 32 random bytes, hex. */
function newSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `aigwhsec_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

limits.put("/alert-endpoint", userAuth, async (c) => {
  const body = parseLimits(
    alertEndpointBody(c.var.config.alertEndpointAllowLocalHttp),
    await c.req.json().catch(() => undefined),
  );
  const secret = newSecret();
  const now = Date.now();
  const userId = c.get("userId");
  await writeAlertEndpoint(c.var.shards.of(userId), userId, { url: body.url, secret }, now);
  c.get("log").info("alert endpoint registered", { url: body.url });
  // the secret is returned here only: a lost secret is replaced by registering again
  return c.json({ url: body.url, secret, registered_at: new Date(now).toISOString() });
});

limits.delete("/alert-endpoint", userAuth, async (c) => {
  const userId = c.get("userId");
  await writeAlertEndpoint(c.var.shards.of(userId), userId, null, Date.now());
  c.get("log").info("alert endpoint removed");
  return c.json({ removed: true });
});
