/**
 * `/admin`: the admin page. Static HTML; the inline script takes the admin key typed in (kept
 * in sessionStorage for the tab's life) and calls the admin API: metrics for a month, dead
 * letters with replay buttons, the latest reconciliation runs.
 */
import { QUEUES } from "@aigate/shared";
import { html } from "hono/html";
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

// biome-ignore lint/complexity/noUselessStringRaw: keeps any backslash of the client script literal
const SCRIPT = String.raw`
(function () {
  "use strict";
  var KEY = "aigate.adminKey";
  var $ = function (id) { return document.getElementById(id); };
  var dlCursor = null;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) { tr.appendChild(c); });
    return tr;
  }
  function notice(text, isError) {
    var n = $("notice");
    n.textContent = text || "";
    n.className = isError ? "notice error" : "notice";
  }
  function dollars(cents) { return "$" + (cents / 100).toFixed(2); }
  function pct(r) { return r === null ? "n/a" : (r * 100).toFixed(1) + " %"; }
  function when(iso) { return iso ? new Date(iso).toLocaleString() : "no"; }

  function AuthError(message) { this.message = message; }

  async function api(path, init) {
    var key = sessionStorage.getItem(KEY);
    if (!key) throw new AuthError("Enter the admin key.");
    var opts = init || {};
    var headers = { authorization: "Bearer " + key };
    if (opts.body) headers["content-type"] = "application/json";
    var res = await fetch(path, { method: opts.method || "GET", headers: headers, body: opts.body });
    var data = await res.json().catch(function () { return null; });
    if (res.status === 401 || res.status === 403) {
      sessionStorage.removeItem(KEY);
      throw new AuthError(data && data.error ? data.error.message : "The key was refused.");
    }
    if (!res.ok) {
      var err = new Error(data && data.error ? data.error.message : "request failed (" + res.status + ")");
      err.details = data && data.error ? data.error.details : null;
      throw err;
    }
    return data;
  }

  function handleError(e) {
    if (e instanceof AuthError) {
      $("content").hidden = true;
      $("forget").hidden = true;
      notice(e.message, true);
      $("key-input").focus();
    } else {
      notice(e.message || "Something went wrong.", true);
    }
  }

  function metric(label, value) {
    var d = document.createElement("div");
    d.appendChild(el("dt", label));
    d.appendChild(el("dd", value));
    return d;
  }

  async function loadMetrics() {
    var month = $("month-input").value;
    var m = await api("/admin/metrics?month=" + encodeURIComponent(month));
    var dl = $("metrics");
    dl.textContent = "";
    [
      ["MRR", dollars(m.mrr_cents)],
      ["ARPU", dollars(m.arpu_cents)],
      ["Paying customers", m.paying_customers + " (pay-as-you-go " + m.paying_by_plan.payg + ", pro " + m.paying_by_plan.pro + ")"],
      ["Churn rate", pct(m.churn_rate)],
      ["Free-to-paid conversion", pct(m.conversion_rate)],
      ["Success rate", pct(m.success_rate)],
      ["Sessions", m.sessions_billable + " billable of " + m.sessions_total],
      ["Invoiced", dollars(m.invoiced_cents)],
    ].forEach(function (p) { dl.appendChild(metric(p[0], p[1])); });
    var body = $("failed-table").querySelector("tbody");
    body.textContent = "";
    Object.keys(m.failed_by_reason).forEach(function (r) {
      body.appendChild(row([el("td", r, "mono"), el("td", m.failed_by_reason[r], "num")]));
    });
  }

  function replayButton(d) {
    var b = el("button", d.replayed_at ? "Replay again" : "Replay");
    b.type = "button";
    b.className = d.replayed_at ? "secondary" : "";
    b.setAttribute("aria-label", (d.replayed_at ? "Replay again " : "Replay ") + d.id);
    b.addEventListener("click", function () {
      replay({ ids: [d.id], force: Boolean(d.replayed_at) }, b);
    });
    return b;
  }

  function renderDeadLetters(page, append) {
    var body = $("dl-table").querySelector("tbody");
    if (!append) body.textContent = "";
    page.dead_letters.forEach(function (d) {
      var who = el("td");
      who.appendChild(el("div", d.id, "mono"));
      who.appendChild(el("div", d.summary, "muted"));
      var why = el("td");
      why.appendChild(el("div", d.error));
      why.appendChild(el("div", d.attempts + " attempt(s)", "muted"));
      var failed = el("td", when(d.first_failed_at), "hide-narrow");
      var replayed = el("td", d.replayed_at ? when(d.replayed_at) + " (" + d.replay_count + "x)" : "no");
      var action = el("td");
      action.appendChild(replayButton(d));
      var tr = row([who, why, failed, replayed, action]);
      tr.setAttribute("data-id", d.id);
      body.appendChild(tr);
    });
    $("dl-empty").hidden = body.children.length > 0;
    dlCursor = page.next_cursor;
    $("dl-more").hidden = !dlCursor;
  }

  function dlQuery() {
    var q = "state=" + encodeURIComponent($("dl-state").value) + "&limit=50";
    if ($("dl-queue").value) q += "&queue=" + encodeURIComponent($("dl-queue").value);
    return q;
  }

  async function loadDeadLetters() {
    $("replay-all").disabled = !$("dl-queue").value;
    renderDeadLetters(await api("/admin/dead-letters?" + dlQuery()), false);
  }

  async function replay(selection, button) {
    button.disabled = true;
    try {
      var r = await api("/admin/dead-letters/replay", { method: "POST", body: JSON.stringify(selection) });
      var text = "Replayed " + r.replayed + " dead letter(s)";
      if (r.ids.length) text += ": " + r.ids.join(", ");
      if (r.skipped.length) text += ". Skipped " + r.skipped.map(function (s) { return s.id + " (" + s.reason + ")"; }).join(", ");
      if (r.more) text += ". More remain: replay again.";
      notice(text + ".");
      await loadDeadLetters();
    } catch (e) {
      handleError(e);
    } finally {
      button.disabled = button.id === "replay-all" ? !$("dl-queue").value : false;
    }
  }

  async function loadReconciliation() {
    var r = await api("/admin/reconciliation?limit=10");
    var body = $("rec-table").querySelector("tbody");
    body.textContent = "";
    r.runs.forEach(function (run) {
      var report = el("td");
      var items = Array.isArray(run.report) ? run.report : [run.report];
      if (items.length === 0 || (items.length === 1 && items[0] === null)) report.textContent = "no differences";
      else {
        var details = el("details");
        details.appendChild(el("summary", items.length + " item(s)"));
        details.appendChild(el("pre", JSON.stringify(run.report, null, 2)));
        report.appendChild(details);
      }
      body.appendChild(row([
        el("td", when(run.started_at) + (run.finished_at ? "" : " (running)")),
        el("td", run.periods_checked, "num"),
        el("td", run.mismatches, "num"),
        el("td", run.repaired, "num"),
        report,
      ]));
    });
    $("rec-empty").hidden = r.runs.length > 0;
  }

  async function loadAll() {
    try {
      await loadMetrics();
      $("content").hidden = false;
      $("forget").hidden = false;
      await Promise.all([loadDeadLetters(), loadReconciliation()]);
      document.body.setAttribute("data-loaded", "true");
    } catch (e) {
      handleError(e);
    }
  }

  $("month-input").value = new Date().toISOString().slice(0, 7);
  $("key-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    $("key-input").value = "";
    notice("");
    loadAll();
  });
  $("forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    $("content").hidden = true;
    $("forget").hidden = true;
    notice("Key forgotten.");
  });
  $("month-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    loadMetrics().catch(handleError);
  });
  $("dl-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    loadDeadLetters().catch(handleError);
  });
  $("dl-queue").addEventListener("change", function () { $("replay-all").disabled = !$("dl-queue").value; });
  $("replay-all").addEventListener("click", function () {
    var queue = $("dl-queue").value;
    if (queue) replay({ queue: queue, all: true }, $("replay-all"));
  });
  $("dl-more").addEventListener("click", async function () {
    try { renderDeadLetters(await api("/admin/dead-letters?" + dlQuery() + "&cursor=" + encodeURIComponent(dlCursor)), true); }
    catch (e) { handleError(e); }
  });

  if (sessionStorage.getItem(KEY)) loadAll();
})();
`;

export function adminPage(nonce: string): Html {
  return renderPage({ title: "AI Gate operations", nonce, body: BODY, script: SCRIPT });
}
