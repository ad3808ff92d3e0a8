/**
 * `/admin`: the admin page. Static HTML; its browser script (adminPage.browser.js) takes the
 * admin key typed in (kept in sessionStorage for the tab's life) and calls the admin API: metrics
 * for a month, dead letters with replay buttons, the latest reconciliation runs.
 */
import { QUEUES } from "@aigate/shared";
import { html } from "hono/html";
import script from "./adminPage.browser.js";
import { type Html, renderPage } from "./layout";

const BODY = html`
<section id="key-section" aria-labelledby="key-h">
  <h2 id="key-h">Admin key</h2>
  <form id="key-form">
    <div class="row">
      <div>
        <label for="key-input">Admin API key</label>
        <input id="key-input" name="key" type="password" autocomplete="off" spellcheck="false" required>
      </div>
      <button type="submit">Use key</button>
      <button type="button" id="forget" class="secondary" hidden>Forget key</button>
    </div>
  </form>
</section>

<p id="notice" class="notice" role="status" aria-live="polite"></p>

<div id="content" hidden>
  <section aria-labelledby="metrics-h">
    <h2 id="metrics-h">Metrics</h2>
    <form id="month-form">
      <div class="row">
        <div><label for="month-input">Month (UTC)</label><input id="month-input" name="month" type="month" required></div>
        <button type="submit">Show metrics</button>
      </div>
    </form>
    <dl class="metrics" id="metrics"></dl>
    <div class="table-wrap">
      <table id="failed-table">
        <caption>Sessions not charged, by reason</caption>
        <thead><tr><th scope="col">Reason</th><th scope="col" class="num">Sessions</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p class="muted">Definitions: docs/operations.md, "Metrics".</p>
  </section>

  <section aria-labelledby="dl-h">
    <h2 id="dl-h">Dead letters</h2>
    <form id="dl-form">
      <div class="row">
        <div><label for="dl-queue">Queue</label>
          <select id="dl-queue" name="queue">
            <option value="">All queues</option>
            <option value="${QUEUES.telemetry}">${QUEUES.telemetry}</option>
            <option value="${QUEUES.verdicts}">${QUEUES.verdicts}</option>
          </select></div>
        <div><label for="dl-state">State</label>
          <select id="dl-state" name="state">
            <option value="pending">Not replayed</option>
            <option value="replayed">Replayed</option>
            <option value="all">All</option>
          </select></div>
        <button type="submit">Show dead letters</button>
      </div>
    </form>
    <div class="actions">
      <button type="button" id="replay-all" class="secondary" disabled>Replay all not replayed in this queue</button>
    </div>
    <div class="table-wrap">
      <table id="dl-table">
        <caption class="visually-hidden">Dead letters, newest first</caption>
        <thead><tr><th scope="col">Dead letter</th><th scope="col">Why</th>
          <th scope="col" class="hide-narrow">Failed</th><th scope="col">Replayed</th><th scope="col">Action</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="dl-empty" class="muted" hidden>No dead letters.</p>
    <div class="actions"><button type="button" id="dl-more" class="secondary" hidden>Show more</button></div>
  </section>

  <section aria-labelledby="rec-h">
    <h2 id="rec-h">Reconciliation with Stripe</h2>
    <div class="table-wrap">
      <table id="rec-table">
        <caption class="visually-hidden">Latest reconciliation runs, newest first</caption>
        <thead><tr><th scope="col">Started</th><th scope="col" class="num">Periods checked</th>
          <th scope="col" class="num">Mismatches</th><th scope="col" class="num">Repaired</th><th scope="col">Report</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="rec-empty" class="muted" hidden>No reconciliation run yet.</p>
  </section>
</div>
`;

export function adminPage(nonce: string): Html {
  return renderPage({ title: "AI Gate operations", nonce, body: BODY, script });
}
