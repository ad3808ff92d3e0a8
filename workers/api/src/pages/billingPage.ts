/**
 * `/`: a user's billing page. Static HTML (nothing user-specific is rendered on the server);
 * its browser script (billingPage.browser.js) takes the user token from the URL fragment
 * `#token=...` or from a paste box and calls the billing API: usage, sessions, daily, invoices
 * (each with its sessions as a CSV download), checkout, plan changes and portal, and the spend
 * cap and alerts (GET/PUT /api/billing/limits, PUT /api/billing/alert-endpoint).
 */
import { centsToDollars, PLANS, PlanId } from "@aigate/shared";
import { describeTiers } from "@aigate/shared/catalog";
import { html, raw } from "hono/html";
import script from "./billingPage.browser.js";
import { type Html, renderPage } from "./layout";

function planCard(id: PlanId): Html {
  const p = PLANS[id];
  // the catalog's words for its tiers: "$0.10 per successful session", "400 successful sessions
  // included, then $0.07 each", "$0.10 per successful session up to 1,000, then $0.08 each"
  const sessions = describeTiers(p.tiersMode, p.tiers);
  const price =
    id === "free"
      ? `$0, ${p.monthlyQuota} successful sessions per month, ${p.concurrentLimit} at a time`
      : p.monthlyFeeCents > 0
        ? `$${centsToDollars(p.monthlyFeeCents)} per month, ${sessions}`
        : `${sessions}, billed monthly`;
  const action =
    id === "free"
      ? ""
      : html`<button type="button" class="upgrade" data-plan="${id}" hidden>Upgrade to ${p.name}</button>`;
  return html`<li class="card" data-plan-card="${id}">
  <h3>${p.name}</h3>
  <p>${price}</p>
  <p class="current" hidden>Your current plan</p>
  ${action}
</li>`;
}

const BODY = html`
<section id="signin" aria-labelledby="signin-h" hidden>
  <h2 id="signin-h">Open your billing page</h2>
  <p class="muted">Your app links here with your access token. You can also paste the token.</p>
  <form id="token-form">
    <label for="token-input">User token</label>
    <textarea id="token-input" name="token" required autocomplete="off" spellcheck="false"></textarea>
    <div class="actions"><button type="submit">Show my billing</button></div>
  </form>
</section>

<p id="notice" class="notice" role="status" aria-live="polite"></p>

<div id="content" hidden>
  <div id="banner" class="banner" role="status" hidden>
    <p id="banner-text"></p>
    <div class="actions" id="banner-actions"></div>
  </div>

  <section aria-labelledby="plan-h">
    <h2 id="plan-h">Your plan: <span id="plan-name"></span></h2>
    <p class="count" id="usage-count"></p>
    <progress id="usage-bar" max="100" value="0" aria-labelledby="usage-count" hidden></progress>
    <p id="usage-period" class="muted"></p>
    <p id="usage-cost"></p>
    <p id="usage-failed"></p>
    <p id="usage-active" class="muted"></p>
    <div class="actions">
      <button type="button" id="portal" class="secondary" hidden>Manage billing</button>
    </div>
  </section>

  <section id="limits" aria-labelledby="limits-h">
    <h2 id="limits-h">Spend cap and alerts</h2>
    <p id="limits-status"></p>
    <form id="limits-form">
      <label for="cap-input">Monthly cap on usage charges, in dollars (empty: no cap)</label>
      <input id="cap-input" name="cap" inputmode="decimal" autocomplete="off" pattern="[0-9]+([.][0-9]{1,2})?">
      <label for="thresholds-input">Alert at these percentages of the cap (comma separated, ascending)</label>
      <input id="thresholds-input" name="thresholds" autocomplete="off">
      <div class="actions"><button type="submit" id="limits-save">Save limits</button></div>
    </form>
    <p class="muted">The cap covers usage charges (sessions), not a plan's monthly fee. Once the sessions
      of this period would pass it, new sessions are refused until the next period or a higher cap.</p>
    <div class="table-wrap">
      <table id="alerts-table">
        <caption class="visually-hidden">Alert thresholds crossed this period</caption>
        <thead><tr><th scope="col">Threshold</th><th scope="col">Crossed</th>
          <th scope="col" class="num">Usage charges</th><th scope="col">Alert delivery</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="alerts-empty" class="muted">No alert this period.</p>
    <form id="endpoint-form">
      <label for="endpoint-input">Send alerts to this URL (https), signed with a secret shown once</label>
      <input id="endpoint-input" name="url" type="url" autocomplete="off">
      <div class="actions"><button type="submit" id="endpoint-save" class="secondary">Register endpoint</button></div>
    </form>
    <p id="endpoint-secret" role="status" hidden>Signing secret (copy it now, it is not shown again):
      <code id="endpoint-secret-value"></code></p>
  </section>

  <section id="change" aria-labelledby="change-h" hidden>
    <h2 id="change-h">Change your plan</h2>
    <div id="pending" class="banner" role="status" hidden>
      <p id="pending-text"></p>
      <div class="actions"><button type="button" id="resume">Keep my current plan</button></div>
    </div>
    <ul class="changes" id="changes" role="list"></ul>
  </section>

  <section aria-labelledby="plans-h">
    <h2 id="plans-h">Plans</h2>
    <ul class="cards" role="list">
      ${planCard("free")}
      ${planCard("payg")}
      ${planCard("pro")}
    </ul>
    <p class="muted">You only pay for sessions that worked: failed sessions are never charged.</p>
  </section>

  <section aria-labelledby="invoices-h">
    <h2 id="invoices-h">Invoices</h2>
    <div class="table-wrap">
      <table id="invoices-table">
        <caption class="visually-hidden">Your invoices, newest first</caption>
        <thead><tr><th scope="col">Date</th><th scope="col">Invoice</th><th scope="col">What</th>
          <th scope="col" class="num">Amount</th><th scope="col">Status</th><th scope="col">Sessions</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="invoices-empty" class="muted" hidden>No invoices yet.</p>
  </section>

  <section aria-labelledby="chart-h">
    <h2 id="chart-h">Daily usage, last 30 days</h2>
    <div class="legend" aria-hidden="true">
      <span><span class="swatch ok"></span>Successful sessions</span>
      <span><span class="swatch bad"></span>Not charged</span>
    </div>
    <div id="chart" class="chart"></div>
    <details>
      <summary>Daily usage as a table</summary>
      <div class="table-wrap">
        <table id="daily-table">
          <caption class="visually-hidden">Sessions per day (UTC)</caption>
          <thead><tr><th scope="col">Day (UTC)</th><th scope="col" class="num">Successful</th>
            <th scope="col" class="num">Not charged</th><th scope="col">Reasons</th></tr></thead>
          <tbody></tbody>
        </table>
      </div>
    </details>
  </section>

  <section aria-labelledby="sessions-h">
    <h2 id="sessions-h">Recent sessions</h2>
    <div class="table-wrap">
      <table id="sessions-table">
        <caption class="visually-hidden">Your most recent sessions, newest first</caption>
        <thead><tr><th scope="col">Started</th><th scope="col">Session</th>
          <th scope="col" class="hide-narrow">Project</th><th scope="col" class="num">Audio</th>
          <th scope="col">Result</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="sessions-empty" class="muted" hidden>No sessions yet.</p>
    <div class="actions"><button type="button" id="sessions-more" class="secondary" hidden>Show more sessions</button></div>
  </section>
</div>
`;

const HEADER = html`<button type="button" id="signout" class="secondary" hidden>Use another token</button>`;

/**
 * Plan names and prices for the script: JSON in a data block (not executed, no nonce needed),
 * inserted with raw() as it is JSON, not text; "<" is escaped so it cannot end the block.
 */
function catalogJson(): string {
  const plans = Object.fromEntries(
    PlanId.options.map((id) => [
      id,
      {
        name: PLANS[id].name,
        perSessionCents: PLANS[id].perSessionCents,
        includedSessions: PLANS[id].includedSessions,
        monthlyFeeCents: PLANS[id].monthlyFeeCents,
      },
    ]),
  );
  return JSON.stringify(plans).replace(/</g, "\\u003c");
}

export function billingPage(nonce: string): Html {
  return renderPage({
    title: "AI Gate billing",
    nonce,
    header: HEADER,
    body: html`${BODY}\n<script type="application/json" id="catalog">${raw(catalogJson())}</script>`,
    script,
  });
}
