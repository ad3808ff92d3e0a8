/**
 * GET /api/billing/daily?days=30 (user token): the caller's sessions per UTC day, for the billing
 * page's chart. An additive extension of contract v1 (docs/api-billing.md).
 */
import { parseInput } from "@aigate/shared";
import { Hono } from "hono";
import { z } from "zod";
import { verifyUserToken } from "../auth";
import type { ApiEnv } from "../context";
import { dailyEntries, dayRange } from "../dailyUsage";
import { dailyRollups } from "../queries";

export const daily = new Hono<ApiEnv>();

const DailyQuery = z.object({
  days: z
    .string()
    .regex(/^\d{1,3}$/, "days must be an integer from 1 to 90")
    .transform(Number)
    .pipe(z.int().min(1).max(90))
    .optional(),
});

daily.get("/daily", async (c) => {
  // Verified here, not by a shared middleware, so the route is safe wherever it is mounted.
  const userId = await verifyUserToken(c.req.header("authorization"), c.var.config.userTokenSecret);
  const query = parseInput(DailyQuery, c.req.query());
  const range = dayRange(Date.now(), query.days ?? 30);
  const rows = await dailyRollups(c.var.shards.of(userId), userId, range.from, range.to);
  return c.json({ from: range.from, to: range.to, days: dailyEntries(range.list, rows) });
});
