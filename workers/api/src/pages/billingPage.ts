/**
 * `/`: a user's billing page. Static HTML (nothing user-specific is rendered on the server);
 * the inline script takes the user token from the URL fragment `#token=...` (then keeps it in
 * sessionStorage and clears the fragment) or from a paste box, and calls the billing API:
 * usage, sessions, daily, checkout and portal.
 */
import { centsToDollars, PLANS, PlanId } from "@aigate/shared";
import { html, raw } from "hono/html";
import { type Html, renderPage } from "./layout";

function planCard(id: PlanId): Html {
  const p = PLANS[id];
  const price =
    id === "free"
      ? `$0, ${p.monthlyQuota} successful sessions per month, ${p.concurrentLimit} at a time`
      : id === "payg"
        ? `$${centsToDollars(p.perSessionCents).toFixed(2)} per successful session, billed monthly`
        : `$${centsToDollars(p.monthlyFeeCents)} per month with ${p.includedSessions} sessions included, then $${centsToDollars(p.perSessionCents).toFixed(2)} each`;
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

  <section aria-labelledby="plans-h">
    <h2 id="plans-h">Plans</h2>
    <ul class="cards" role="list">
      ${planCard("free")}
      ${planCard("payg")}
      ${planCard("pro")}
    </ul>
    <p class="muted">You only pay for sessions that worked: failed sessions are never charged.</p>
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
      },
    ]),
  );
  return JSON.stringify(plans).replace(/</g, "\\u003c");
}

// biome-ignore lint/complexity/noUselessStringRaw: keeps any backslash of the client script literal
const SCRIPT = String.raw`
(function () {
  "use strict";
  var KEY = "aigate.userToken";
  var PLANS = JSON.parse(document.getElementById("catalog").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var nextCursor = null;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function notice(text, isError) {
    var n = $("notice");
    n.textContent = text || "";
    n.className = isError ? "notice error" : "notice";
  }
  function dollars(cents) { return "$" + (cents / 100).toFixed(2); }
  function dateUtc(iso) {
    return new Date(iso).toLocaleDateString(undefined, { timeZone: "UTC", year: "numeric", month: "short", day: "numeric" });
  }

  function takeToken() {
    var m = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY);
  }

  function AuthError() {}

  async function api(path, init) {
    var token = sessionStorage.getItem(KEY);
    if (!token) throw new AuthError();
    var opts = init || {};
    var headers = { authorization: "Bearer " + token };
    if (opts.body) headers["content-type"] = "application/json";
    var res = await fetch(path, { method: opts.method || "GET", headers: headers, body: opts.body });
    if (res.status === 401) { sessionStorage.removeItem(KEY); throw new AuthError(); }
    var data = await res.json().catch(function () { return null; });
    if (!res.ok) {
      var msg = data && data.error ? data.error.message : "request failed (" + res.status + ")";
      var err = new Error(msg);
      err.code = data && data.error ? data.error.code : "";
      throw err;
    }
    return data;
  }

  function showSignin(message) {
    $("content").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    notice(message || "", Boolean(message));
  }

  function renderUsage(u) {
    var plan = PLANS[u.plan] || { name: u.plan };
    $("plan-name").textContent = plan.name;
    var used = u.sessions_this_month;
    $("usage-count").textContent = u.quota === null
      ? used + " sessions this month"
      : used + " / " + u.quota + " sessions this month";
    var bar = $("usage-bar");
    bar.hidden = u.quota === null;
    if (u.quota !== null) { bar.max = u.quota; bar.value = Math.min(used, u.quota); }
    $("usage-period").textContent = "Billing period: " + dateUtc(u.period_start) + " to " +
      dateUtc(new Date(Date.parse(u.period_end) - 1).toISOString()) + " (UTC)";
    $("usage-cost").textContent = "Estimated cost this period: " + dollars(u.estimated_cost_cents);
    $("usage-failed").textContent = u.failed_sessions + (u.failed_sessions === 1 ? " session" : " sessions") +
      " not charged this period";
    $("usage-active").textContent = u.concurrent_limit === null
      ? u.active_sessions + " active now"
      : u.active_sessions + " of " + u.concurrent_limit + " concurrent sessions active now";

    var isFree = u.plan === "free";
    document.querySelectorAll("[data-plan-card]").forEach(function (card) {
      card.querySelector(".current").hidden = card.getAttribute("data-plan-card") !== u.plan;
    });
    document.querySelectorAll("button.upgrade").forEach(function (b) { b.hidden = !isFree; });
    $("portal").hidden = isFree;

    var banner = $("banner");
    var actions = $("banner-actions");
    actions.textContent = "";
    banner.hidden = !u.warning;
    if (u.warning) {
      var pct = Math.floor((used * 100) / u.quota);
      if (isFree) {
        $("banner-text").textContent = "You have used " + used + " of your " + u.quota +
          " free sessions this month (" + pct + " %). New sessions are refused once the quota is used up: upgrade to keep your app running.";
        ["payg", "pro"].forEach(function (id) {
          var b = el("button", "Upgrade to " + PLANS[id].name);
          b.type = "button";
          b.className = "upgrade-cta";
          b.setAttribute("data-plan", id);
          b.addEventListener("click", function () { checkout(id, b); });
          actions.appendChild(b);
        });
      } else {
        $("banner-text").textContent = "You have used " + used + " of the " + u.quota + " sessions included in " +
          plan.name + " (" + pct + " %). Further sessions cost " + dollars(plan.perSessionCents) + " each.";
      }
    }
  }

  function resultText(s) {
    if (!s.billable) return "not charged: " + s.reason;
    return s.charged ? "charged" : "billable";
  }

  function renderSessions(page, append) {
    var body = $("sessions-table").querySelector("tbody");
    if (!append) body.textContent = "";
    page.sessions.forEach(function (s) {
      var tr = document.createElement("tr");
      var started = el("td", new Date(s.created_at).toLocaleString());
      var id = el("td", s.session_id, "mono");
      var project = el("td", s.project_id, "mono hide-narrow");
      var audio = el("td", (s.audio_ms / 1000).toFixed(1) + " s", "num");
      var result = el("td", resultText(s), s.billable ? "" : "not-charged");
      [started, id, project, audio, result].forEach(function (td) { tr.appendChild(td); });
      body.appendChild(tr);
    });
    $("sessions-empty").hidden = body.children.length > 0;
    nextCursor = page.next_cursor;
    $("sessions-more").hidden = !nextCursor;
  }

  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderDaily(d) {
    var days = d.days;
    var chart = $("chart");
    // Drawn at the container's width, so its text keeps its size on a phone.
    var W = Math.max(300, Math.round(chart.clientWidth) || 600), H = 180, top = 12, bottom = 24, left = 30;
    var max = Math.max(1, Math.max.apply(null, days.map(function (x) { return x.sessions; })));
    var slot = (W - left) / days.length;
    var bw = Math.max(2, slot * 0.7);
    var scale = (H - top - bottom) / max;
    var totalOk = 0, totalBad = 0, busiest = days[0];
    days.forEach(function (x) {
      totalOk += x.billable; totalBad += x.not_charged;
      if (x.sessions > busiest.sessions) busiest = x;
    });
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-labelledby": "chart-title", "aria-describedby": "chart-desc" });
    root.appendChild(svg("title", { id: "chart-title" }, "Sessions per day, " + d.from + " to " + d.to + " (UTC)"));
    root.appendChild(svg("desc", { id: "chart-desc" }, totalOk + " successful and " + totalBad +
      " not charged sessions in " + days.length + " days" +
      (busiest && busiest.sessions > 0 ? "; busiest day " + busiest.day + " with " + busiest.sessions + " sessions." : ".") +
      " The table below lists every day."));
    root.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#6b7280" }));
    root.appendChild(svg("text", { x: left - 4, y: top + 4, "text-anchor": "end", "font-size": 12, fill: "#374151" }, String(max)));
    root.appendChild(svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end", "font-size": 12, fill: "#374151" }, "0"));
    days.forEach(function (x, i) {
      var xPos = left + i * slot + (slot - bw) / 2;
      var okH = x.billable * scale, badH = x.not_charged * scale;
      if (okH > 0) root.appendChild(svg("rect", { x: xPos, y: H - bottom - okH, width: bw, height: okH, fill: "#1d4ed8" }));
      if (badH > 0) root.appendChild(svg("rect", { x: xPos, y: H - bottom - okH - badH, width: bw, height: badH, fill: "#b45309" }));
      if (i === 0 || i === days.length - 1 || i === Math.floor(days.length / 2)) {
        var anchor = i === 0 ? "start" : i === days.length - 1 ? "end" : "middle";
        var xText = i === 0 ? xPos : i === days.length - 1 ? xPos + bw : xPos + bw / 2;
        root.appendChild(svg("text", { x: xText, y: H - 6, "text-anchor": anchor, "font-size": 12, fill: "#374151" }, x.day.slice(5)));
      }
    });
    chart.textContent = "";
    chart.appendChild(root);

    var body = $("daily-table").querySelector("tbody");
    body.textContent = "";
    days.slice().reverse().forEach(function (x) {
      var tr = document.createElement("tr");
      var reasons = Object.keys(x.not_charged_by_reason).map(function (r) { return r + ": " + x.not_charged_by_reason[r]; }).join(", ");
      [el("td", x.day), el("td", x.billable, "num"), el("td", x.not_charged, "num"), el("td", reasons)].forEach(function (td) { tr.appendChild(td); });
      body.appendChild(tr);
    });
  }

  async function checkout(plan, button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    notice("Opening checkout...");
    try {
      var s = await api("/api/billing/checkout", { method: "POST", body: JSON.stringify({ plan: plan }) });
      location.assign(s.url);
    } catch (e) {
      handleError(e);
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  async function portal(button) {
    button.disabled = true;
    try {
      var p = await api("/api/billing/portal", { method: "POST" });
      location.assign(p.url);
    } catch (e) {
      handleError(e);
      button.disabled = false;
    }
  }

  function handleError(e) {
    if (e instanceof AuthError) showSignin("Your token is missing or expired. Paste a new one.");
    else notice(e.message || "Something went wrong.", true);
  }

  async function load() {
    $("main").setAttribute("aria-busy", "true");
    try {
      var results = await Promise.all([
        api("/api/billing/usage"),
        api("/api/billing/sessions?limit=20"),
        api("/api/billing/daily?days=30"),
      ]);
      $("signin").hidden = true;
      $("content").hidden = false;
      $("signout").hidden = false;
      renderUsage(results[0]);
      renderSessions(results[1], false);
      renderDaily(results[2]);
      document.body.setAttribute("data-loaded", "true");
      return results[0];
    } catch (e) {
      handleError(e);
      return null;
    } finally {
      $("main").removeAttribute("aria-busy");
    }
  }

  document.querySelectorAll("button.upgrade").forEach(function (b) {
    b.addEventListener("click", function () { checkout(b.getAttribute("data-plan"), b); });
  });
  $("portal").addEventListener("click", function () { portal($("portal")); });
  $("sessions-more").addEventListener("click", async function () {
    try { renderSessions(await api("/api/billing/sessions?limit=20&cursor=" + encodeURIComponent(nextCursor)), true); }
    catch (e) { handleError(e); }
  });
  $("signout").addEventListener("click", function () { sessionStorage.removeItem(KEY); showSignin(""); });
  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("token-input").value = "";
    notice("");
    load();
  });

  var params = new URLSearchParams(location.search);
  var returned = params.get("checkout");
  if (returned) history.replaceState(null, "", location.pathname + location.hash);

  if (!takeToken()) { showSignin(""); return; }
  load().then(function (usage) {
    if (returned === "canceled") notice("Checkout was canceled: nothing was charged.");
    if (returned === "success" && usage) {
      notice("Thank you! Your payment is being confirmed; your plan updates in a moment.");
      var tries = 0;
      var timer = setInterval(function () {
        tries += 1;
        load().then(function (u) {
          if ((u && u.plan !== "free") || tries >= 12) {
            clearInterval(timer);
            if (u && u.plan !== "free") notice("You are now on " + PLANS[u.plan].name + ".");
          }
        });
      }, 5000);
    }
  });
})();
`;

export function billingPage(nonce: string): Html {
  return renderPage({
    title: "AI Gate billing",
    nonce,
    header: HEADER,
    body: html`${BODY}\n<script type="application/json" id="catalog">${raw(catalogJson())}</script>`,
    script: SCRIPT,
  });
}
