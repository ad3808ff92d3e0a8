/**
 * The naive baseline the pricing strategy sketches: every `ended` event updates its session row
 * in D1 and, when the session lasted 5 s or more, sends one meter event to Stripe, inline.
 * Kept only to measure the real pipeline against it (npm run bench).
 */
import { createStripe } from "@aigate/shared/stripe";

interface NaiveEnv {
  DB: D1Database;
  STRIPE_SECRET_KEY: string;
  STRIPE_API_BASE: string;
  STRIPE_METER_EVENT_NAME: string;
}

interface NaiveEvent {
  id: string;
  type: string;
  subject: string;
  time: string;
  data: { user_id: string; project_id: string; audio_ms?: number };
}

export default {
  async fetch(request, env) {
    const body: unknown = await request.json();
    const events = (Array.isArray(body) ? body : [body]) as NaiveEvent[];
    const stripe = createStripe(env, { maxNetworkRetries: 2 });
    let rowsRead = 0;
    let rowsWritten = 0;
    let stripeCalls = 0;
    for (const e of events) {
      if (e.type === "aigate.session.created") {
        const r = await env.DB.prepare(
          `INSERT OR IGNORE INTO session_usage (id, user_id, project_id, session_id, status, created_at)
           VALUES (?1, ?2, ?3, ?1, 'pending', ?4)`,
        )
          .bind(e.subject, e.data.user_id, e.data.project_id, Date.parse(e.time))
          .run();
        rowsRead += r.meta.rows_read;
        rowsWritten += r.meta.rows_written;
      } else if (e.type === "aigate.session.ended") {
        const duration = e.data.audio_ms ?? 0;
        if (duration < 5000) continue; // "Don't charge if <5s"
        const r = await env.DB.prepare(
          `UPDATE session_usage SET status = 'success', duration_ms = ?2 WHERE session_id = ?1 AND status = 'pending'`,
        )
          .bind(e.subject, duration)
          .run();
        rowsRead += r.meta.rows_read;
        rowsWritten += r.meta.rows_written;
        if (r.meta.changes === 0) continue;
        const found = await env.DB.prepare(
          "SELECT stripe_customer_id FROM stripe_customers WHERE user_id = ?1",
        )
          .bind(e.data.user_id)
          .all<{ stripe_customer_id: string }>();
        rowsRead += found.meta.rows_read;
        const customer = found.results[0];
        if (!customer) continue;
        await stripe.billing.meterEvents.create({
          event_name: env.STRIPE_METER_EVENT_NAME,
          payload: { stripe_customer_id: customer.stripe_customer_id, value: "1" },
          identifier: e.subject,
        });
        stripeCalls += 1;
      }
    }
    console.log(
      JSON.stringify({
        level: "info",
        worker: "naive",
        msg: "naive batch",
        events: events.length,
        d1_rows_read: rowsRead,
        d1_rows_written: rowsWritten,
        stripe_calls: stripeCalls,
      }),
    );
    return Response.json({ accepted: events.length }, { status: 202 });
  },
} satisfies ExportedHandler<NaiveEnv>;
