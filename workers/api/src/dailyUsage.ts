/**
 * Daily usage for the billing page's chart: the classifier's daily rollups of one user, one entry
 * per UTC day (days without sessions included, as zeros). Pure: the route reads the rows.
 */
import { utcDay } from "@aigate/shared";
import type { DailyRollupRow } from "./queries";

const DAY_MS = 86_400_000;

export interface DailyEntry {
  day: string;
  sessions: number;
  billable: number;
  not_charged: number;
  not_charged_by_reason: Record<string, number>;
  audio_ms: number;
}

/** The `days` UTC days ending with today's: [first, last] as "YYYY-MM-DD". */
export function dayRange(now: number, days: number): { from: string; to: string; list: string[] } {
  const list: string[] = [];
  for (let i = days - 1; i >= 0; i -= 1) list.push(utcDay(now - i * DAY_MS));
  return { from: list[0] ?? utcDay(now), to: utcDay(now), list };
}

export function dailyEntries(days: readonly string[], rows: readonly DailyRollupRow[]): DailyEntry[] {
  const byDay = new Map<string, DailyEntry>(
    days.map((day) => [
      day,
      { day, sessions: 0, billable: 0, not_charged: 0, not_charged_by_reason: {}, audio_ms: 0 },
    ]),
  );
  for (const r of rows) {
    const e = byDay.get(r.day);
    if (!e) continue;
    e.sessions += r.sessions;
    e.audio_ms += r.audio_ms;
    if (r.reason === "success") e.billable += r.sessions;
    else {
      e.not_charged += r.sessions;
      e.not_charged_by_reason[r.reason] = (e.not_charged_by_reason[r.reason] ?? 0) + r.sessions;
    }
  }
  return [...byDay.values()];
}
