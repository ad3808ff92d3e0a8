/**
 * The sessions an invoice charges when some of them were archived out of D1 (sessionArchive.ts):
 * the same rows as `invoiceSessionsPage` (queries.ts), computed from the archive's objects and
 * the rows still in D1 together, by the same rule (CHARGING_INVOICE: ranks up to what Stripe
 * billed on the series' invoice, the later ranks on the adjustment whose range holds them) and
 * with the same positions (rank order among the series' billable sessions). Used only when an
 * archived user-day overlaps one of the invoice's series; otherwise the SQL answers alone.
 */
import { billingHour, LISTED_SESSIONS, type PaidPlanId } from "@aigate/shared";
import type { Cursor } from "./cursor";
import type { InvoiceSessionRow } from "./queries";
import {
  type ArchivedSession,
  type ArchiveManifest,
  dayOf,
  readArchivedDay,
  SESSION_COLUMNS,
} from "./sessionArchive";

interface SeriesRow {
  plan: PaidPlanId;
  period_start: number;
  period_end: number;
  frozen_at: number | null;
  billed_seq: number | null;
  billable_sessions: number;
  stripe_billed: number | null;
  stripe_invoice_id: string | null;
  stripe_price_id: string | null;
}

interface AdjustmentRow {
  plan: string;
  period_start: number;
  from_seq: number;
  to_seq: number;
  stripe_invoice_id: string | null;
}

const seriesKey = (plan: string | null, periodStart: number | null) => `${plan}|${periodStart}`;

/** The invoice that charges a billable ranked session of a series (CHARGING_INVOICE in queries.ts). */
export function chargingInvoice(
  seq: number,
  series: SeriesRow,
  adjustments: readonly AdjustmentRow[],
): string | null {
  if (series.frozen_at === null) return null;
  const billed = series.stripe_billed ?? 0;
  if (
    (series.billed_seq === null && series.billable_sessions <= billed) ||
    seq <= (series.billed_seq ?? billed)
  )
    return series.stripe_invoice_id;
  const holder = adjustments
    .filter((a) => seq > a.from_seq && seq <= a.to_seq)
    .sort((a, b) => a.to_seq - b.to_seq)[0];
  return holder?.stripe_invoice_id ?? null;
}

/**
 * All the sessions `invoiceId` charges, oldest first, when an archived user-day overlaps one of
 * its series; null when none does (the SQL then answers). An archived object that is missing or
 * corrupt is an error, never fewer rows.
 */
export async function archivedInvoiceSessions(
  db: D1Database,
  bucket: R2Bucket,
  userId: string,
  invoiceId: string,
): Promise<InvoiceSessionRow[] | null> {
  const { results: series } = await db
    .prepare(
      `SELECT plan, period_start, period_end, frozen_at, billed_seq, billable_sessions, stripe_billed, stripe_invoice_id,
         stripe_price_id
       FROM usage_periods
       WHERE user_id = ?1 AND (plan, period_start) IN (
         SELECT plan, period_start FROM usage_periods WHERE user_id = ?1 AND stripe_invoice_id = ?2
         UNION
         SELECT plan, period_start FROM usage_adjustments WHERE user_id = ?1 AND stripe_invoice_id = ?2)`,
    )
    .bind(userId, invoiceId)
    .all<SeriesRow>();
  if (series.length === 0) return null;
  const days = (s: SeriesRow) =>
    [dayOf(s.period_start), dayOf(Math.max(s.period_start, s.period_end))] as const;
  const from = series.map((s) => days(s)[0]).sort()[0] ?? "";
  const to =
    series
      .map((s) => days(s)[1])
      .sort()
      .at(-1) ?? "";
  const { results: manifests } = await db
    .prepare("SELECT * FROM session_archives WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day")
    .bind(userId, from, to)
    .all<ArchiveManifest>();
  const overlapping = manifests.filter((m) => series.some((s) => m.day >= days(s)[0] && m.day <= days(s)[1]));
  if (overlapping.length === 0) return null;

  const { results: adjustments } = await db
    .prepare(
      `SELECT plan, period_start, from_seq, to_seq, stripe_invoice_id FROM usage_adjustments
       WHERE user_id = ?1 AND sessions > 0 AND (plan, period_start) IN (SELECT value ->> '$[0]', value ->> '$[1]' FROM json_each(?2))`,
    )
    .bind(userId, JSON.stringify(series.map((s) => [s.plan, s.period_start])))
    .all<AdjustmentRow>();

  // every billable ranked session of the series: archived, then D1's rows over them
  const bySeries = new Map(series.map((s) => [seriesKey(s.plan, s.period_start), s]));
  const sessions = new Map<string, ArchivedSession>();
  const belongs = (r: ArchivedSession) => {
    const s = bySeries.get(seriesKey(r.plan, r.period_start));
    return s !== undefined && r.billable === 1 && r.seq !== null && r.billed_at >= s.period_start;
  };
  for (const m of overlapping)
    for (const r of await readArchivedDay(bucket, m)) if (belongs(r)) sessions.set(r.session_id, r);
  for (const s of series) {
    const { results } = await db
      .prepare(
        `SELECT ${SESSION_COLUMNS.map((c) => `s.${c}`).join(", ")} FROM ${LISTED_SESSIONS}
         WHERE l.user_id = ?1 AND l.hour >= ?4 AND s.billed_at >= ?2 AND s.plan = ?3 AND s.period_start = ?2
           AND s.billable = 1 AND s.seq IS NOT NULL`,
      )
      .bind(userId, s.period_start, s.plan, billingHour(s.period_start))
      .all<ArchivedSession>();
    for (const r of results) sessions.set(r.session_id, r);
  }

  const charged: InvoiceSessionRow[] = [];
  for (const s of series) {
    const ranked = [...sessions.values()]
      .filter((r) => r.plan === s.plan && r.period_start === s.period_start)
      .sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
    const own = adjustments.filter((a) => a.plan === s.plan && a.period_start === s.period_start);
    const mine = ranked
      .map((r, i) => ({ r, position: i + 1 }))
      .filter(({ r }) => chargingInvoice(r.seq ?? 0, s, own) === invoiceId);
    const first = mine[0]?.position ?? 0;
    const last = mine.at(-1)?.position ?? 0;
    for (const { r, position } of mine) {
      charged.push({
        session_id: r.session_id,
        project_id: r.project_id,
        billed_at: r.billed_at,
        created_at: r.created_at,
        first_event_at: r.first_event_at,
        ended_at: r.ended_at,
        last_event_at: r.last_event_at,
        audio_ms: r.audio_ms,
        plan: s.plan,
        period_start: s.period_start,
        stripe_price_id: s.stripe_price_id,
        position,
        first_position: first,
        last_position: last,
      });
    }
  }
  return charged.sort(
    (a, b) =>
      a.billed_at - b.billed_at || (a.session_id < b.session_id ? -1 : a.session_id > b.session_id ? 1 : 0),
  );
}

/** The rows strictly after `after` (billing time, then id), at most `limit`: a page of the list. */
export function pageAfter(
  rows: InvoiceSessionRow[],
  after: Cursor | null,
  limit: number,
): InvoiceSessionRow[] {
  const start = after
    ? rows.findIndex(
        (r) => r.billed_at > after.createdAt || (r.billed_at === after.createdAt && r.session_id > after.id),
      )
    : 0;
  return start < 0 ? [] : rows.slice(start, start + limit);
}

/**
 * Where a user's sessions billed before some time went: the end (exclusive, RFC 3339) of the
 * latest archived day, or null when nothing of theirs was archived. The sessions list reports
 * it, so a list that ends there says why.
 */
export async function archivedBefore(db: D1Database, userId: string): Promise<string | null> {
  const row = await db
    .prepare("SELECT max(day) AS day FROM session_archives WHERE user_id = ?1")
    .bind(userId)
    .first<{ day: string | null }>();
  return row?.day ? new Date(Date.parse(`${row.day}T00:00:00Z`) + 86_400_000).toISOString() : null;
}
