// @ts-check
/**
 * The billing page's browser script (run after layout.browser.js). It takes the user token from
 * the URL fragment `#token=...` (then keeps it in sessionStorage and clears the fragment) or from
 * the paste box, and shows the billing API's usage, sessions, daily usage and invoices (each with
 * a link downloading the sessions it charges as CSV); its buttons open checkout and the billing
 * portal, and change the plan of a subscriber (POST /api/billing/plan), each saying what it will
 * cost.
 *
 * The parts of the billing API's answers it reads (docs/api-billing.md):
 * @typedef {{ name: string, perSessionCents: number, includedSessions: number,
 *   monthlyFeeCents: number }} CatalogPlan
 * @typedef {{ plan: string, sessions_this_month: number, quota: number | null, period_start: string,
 *   period_end: string, estimated_cost_cents: number, failed_sessions: number, active_sessions: number,
 *   concurrent_limit: number | null, warning: boolean, pending_plan: string | null,
 *   pending_effective_at: string | null, session_price: SessionPrice | null }} Usage
 * @typedef {{ tiers_mode: string, tiers: { up_to: number | null, unit_amount_cents: number }[],
 *   catalog: boolean }} SessionPrice
 * @typedef {{ plan: string, when: "now" | "period_end", label: string, detail: string }} PlanChange
 * @typedef {{ created_at: string, session_id: string, project_id: string, audio_ms: number,
 *   billable: boolean, charged: boolean, reason: string }} SessionRow
 * @typedef {{ sessions: SessionRow[], next_cursor: string | null }} SessionsPage
 * @typedef {{ day: string, sessions: number, billable: number, not_charged: number,
 *   not_charged_by_reason: Record<string, number> }} DailyEntry
 * @typedef {{ from: string, to: string, days: DailyEntry[] }} DailyUsage
 * @typedef {{ description: string, quantity: number, amount_cents: number }} InvoiceLine
 * @typedef {{ id: string, number: string | null, status: string, total_cents: number, created: string,
 *   hosted_invoice_url: string | null, lines: InvoiceLine[] }} Invoice
 * @typedef {{ invoices: Invoice[], next_cursor: string | null }} InvoicesPage
 * @typedef {{ threshold: number, crossed_at: string, usage_cents: number, cap_cents: number,
 *   delivery: string }} SpendAlert
 * @typedef {{ monthly_cap_cents: number | null, alert_thresholds: number[],
 *   alert_endpoint: { url: string } | null, plan: string, usage_cents: number,
 *   cap_sessions: number | null, sessions_this_period: number, alerts: SpendAlert[] }} Limits
 */
(() => {
  const KEY = "aigate.userToken";
  /** @type {Record<string, CatalogPlan>} */
  const PLANS = JSON.parse(byId("catalog").textContent ?? "null");
  /** @type {ApiAccess} */
  const access = { storageKey: KEY, refusedStatuses: [401], missingMessage: "", refusedMessage: "" };
  /** @type {string | null} */
  let nextCursor = null;

  /**
   * @param {string} path
   * @param {{ method?: string, body?: string }} [init]
   */
  const api = (path, init) => callApi(access, path, init);

  /** @param {string} id */
  const plan = (id) => PLANS[id] ?? { name: id, perSessionCents: 0, includedSessions: 0, monthlyFeeCents: 0 };

  /**
   * What a session beyond the included ones costs under the subscriber's own price (an older
   * price version or a custom price may differ from the catalog's); null when the usage has none.
   * @param {Usage} u
   */
  function nextSessionCents(u) {
    const tiers = u.session_price?.tiers ?? [];
    const next = Math.max(u.sessions_this_month, u.quota ?? 0) + 1;
    const tier = tiers.find((t) => t.up_to === null || next <= t.up_to);
    return tier ? tier.unit_amount_cents : null;
  }

  /** @param {string} iso */
  function dateUtc(iso) {
    return new Date(iso).toLocaleDateString(undefined, {
      timeZone: "UTC",
      year: "numeric",
      month: "short",
      day: "numeric",
    });
  }

  function takeToken() {
    const m = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
    if (m?.[1]) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY);
  }

  /** @param {string} message */
  function showSignin(message) {
    byId("content").hidden = true;
    byId("signout").hidden = true;
    byId("signin").hidden = false;
    notice(message, Boolean(message));
  }

  /** @param {Usage} u */
  function renderUsage(u) {
    const current = plan(u.plan);
    byId("plan-name").textContent = current.name;
    const used = u.sessions_this_month;
    byId("usage-count").textContent =
      u.quota === null ? `${used} sessions this month` : `${used} / ${u.quota} sessions this month`;
    const bar = byIdAs("usage-bar", HTMLProgressElement);
    bar.hidden = u.quota === null;
    if (u.quota !== null) {
      bar.max = u.quota;
      bar.value = Math.min(used, u.quota);
    }
    const lastDay = new Date(Date.parse(u.period_end) - 1).toISOString();
    byId("usage-period").textContent =
      `Billing period: ${dateUtc(u.period_start)} to ${dateUtc(lastDay)} (UTC)`;
    byId("usage-cost").textContent = `Estimated cost this period: ${dollars(u.estimated_cost_cents)}`;
    byId("usage-failed").textContent =
      `${u.failed_sessions}${u.failed_sessions === 1 ? " session" : " sessions"} not charged this period`;
    byId("usage-active").textContent =
      u.concurrent_limit === null
        ? `${u.active_sessions} active now`
        : `${u.active_sessions} of ${u.concurrent_limit} concurrent sessions active now`;

    const isFree = u.plan === "free";
    for (const card of queryAllAs(document, "[data-plan-card]", HTMLElement)) {
      queryAs(card, ".current", HTMLElement).hidden = card.getAttribute("data-plan-card") !== u.plan;
    }
    for (const b of queryAllAs(document, "button.upgrade", HTMLButtonElement)) b.hidden = !isFree;
    byId("portal").hidden = isFree;

    const banner = byId("banner");
    const actions = byId("banner-actions");
    actions.textContent = "";
    banner.hidden = !u.warning;
    if (u.warning && u.quota !== null) {
      const pct = Math.floor((used * 100) / u.quota);
      if (isFree) {
        byId("banner-text").textContent =
          `You have used ${used} of your ${u.quota} free sessions this month (${pct} %). ` +
          "New sessions are refused once the quota is used up: upgrade to keep your app running.";
        for (const id of ["payg", "pro"]) {
          const b = el("button", `Upgrade to ${plan(id).name}`);
          b.type = "button";
          b.className = "upgrade-cta";
          b.setAttribute("data-plan", id);
          b.addEventListener("click", () => checkout(id, b));
          actions.appendChild(b);
        }
      } else {
        byId("banner-text").textContent =
          `You have used ${used} of the ${u.quota} sessions included in ${current.name} (${pct} %). ` +
          `Further sessions cost ${dollars(nextSessionCents(u) ?? current.perSessionCents)} each.`;
      }
    }
  }

  /**
   * The changes a subscriber can make now, and what each costs (docs/billing.md, "Changing plans").
   * @param {Usage} u
   * @returns {PlanChange[]}
   */
  function changesFor(u) {
    const end = dateUtc(new Date(Date.parse(u.period_end) - 1).toISOString());
    const pro = plan("pro");
    const payg = plan("payg");
    if (u.plan === "payg") {
      return [
        {
          plan: "pro",
          when: "now",
          label: `Upgrade to ${pro.name} now`,
          detail:
            `${dollars(pro.monthlyFeeCents)} today for a new monthly period with ${pro.includedSessions} sessions ` +
            `included, then ${dollars(pro.perSessionCents)} each. Your ${payg.name} sessions so far ` +
            `(${dollars(u.estimated_cost_cents)}) are billed on the same invoice.`,
        },
        {
          plan: "free",
          when: "period_end",
          label: "Cancel at the end of this period",
          detail: `Your plan stays until ${end}; the period's sessions are on the final invoice. Free limits apply after.`,
        },
        {
          plan: "free",
          when: "now",
          label: "Cancel now",
          detail: `Ends today with a final invoice of your sessions so far (${dollars(u.estimated_cost_cents)}).`,
        },
      ];
    }
    if (u.plan === "pro") {
      const overage = Math.max(0, u.estimated_cost_cents - pro.monthlyFeeCents);
      return [
        {
          plan: "payg",
          when: "period_end",
          label: `Switch to ${payg.name} at the end of this period`,
          detail: `Your ${dollars(pro.monthlyFeeCents)} is paid and your included sessions stay usable until ${end}; then ${dollars(payg.perSessionCents)} per session.`,
        },
        {
          plan: "payg",
          when: "now",
          label: `Switch to ${payg.name} now`,
          detail: `No refund of this period's fee; sessions beyond the included ones so far (${dollars(overage)}) are billed now.`,
        },
        {
          plan: "free",
          when: "period_end",
          label: "Cancel at the end of this period",
          detail: `Your plan stays until ${end}; the period's overage is on the final invoice. Free limits apply after.`,
        },
        {
          plan: "free",
          when: "now",
          label: "Cancel now",
          detail: `Ends today, no refund; sessions beyond the included ones so far (${dollars(overage)}) are billed now.`,
        },
      ];
    }
    return [];
  }

  /** @param {Usage} u */
  function renderChanges(u) {
    const section = byId("change");
    section.hidden = u.plan === "free";
    const pending = byId("pending");
    pending.hidden = u.pending_plan === null;
    if (u.pending_plan !== null && u.pending_effective_at !== null) {
      const when = dateUtc(u.pending_effective_at);
      byId("pending-text").textContent =
        u.pending_plan === "free"
          ? `Your subscription ends on ${when}.`
          : `Your plan changes to ${plan(u.pending_plan).name} on ${when}.`;
    }
    const list = byId("changes");
    list.textContent = "";
    for (const change of changesFor(u)) {
      if (u.pending_plan === change.plan && change.when === "period_end") continue;
      const b = el("button", change.label);
      b.type = "button";
      b.className = change.when === "now" ? "secondary" : "";
      b.setAttribute("data-change", `${change.plan}:${change.when}`);
      b.addEventListener("click", () => changePlan({ plan: change.plan, when: change.when }, b));
      const item = el("li", "");
      item.appendChild(b);
      item.appendChild(el("p", change.detail, "muted"));
      list.appendChild(item);
    }
  }

  /**
   * @param {{ plan: string, when: string } | { resume: true }} body
   * @param {HTMLButtonElement} button
   */
  async function changePlan(body, button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    notice("Changing your plan...");
    try {
      /** @type {{ plan: string, pending_plan: string | null, effective_at: string | null }} */
      const r = await api("/api/billing/plan", { method: "POST", body: JSON.stringify(body) });
      await load();
      notice(
        r.pending_plan === null
          ? `You are on ${plan(r.plan).name}.`
          : r.pending_plan === "free"
            ? `Your subscription ends on ${dateUtc(r.effective_at ?? "")}.`
            : `Your plan changes to ${plan(r.pending_plan).name} on ${dateUtc(r.effective_at ?? "")}.`,
      );
    } catch (e) {
      handleError(e);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  /** @param {InvoicesPage} page */
  function renderInvoices(page) {
    const body = queryAs(byId("invoices-table"), "tbody", HTMLElement);
    body.textContent = "";
    for (const inv of page.invoices) {
      const what = inv.lines
        .filter((l) => l.amount_cents !== 0)
        .map((l) => `${l.description}: ${dollars(l.amount_cents)}`)
        .join("; ");
      const name = el("td", "", "mono");
      if (inv.hosted_invoice_url) {
        const a = el("a", inv.number ?? inv.id);
        a.setAttribute("href", inv.hosted_invoice_url);
        name.appendChild(a);
      } else {
        name.textContent = inv.number ?? inv.id;
      }
      const label = inv.number ?? inv.id;
      const csv = el("a", "download sessions");
      csv.setAttribute("href", `/api/billing/invoices/${encodeURIComponent(inv.id)}/sessions?format=csv`);
      csv.setAttribute("download", `invoice-${label.replace(/[^A-Za-z0-9_-]/g, "_")}-sessions.csv`);
      csv.setAttribute("aria-label", `Download the sessions of invoice ${label} (CSV)`);
      csv.className = "download-sessions";
      csv.addEventListener("click", (ev) => {
        ev.preventDefault();
        downloadCsv(/** @type {HTMLAnchorElement} */ (csv)).catch(handleError);
      });
      const sessionsCell = el("td", "");
      sessionsCell.appendChild(csv);
      body.appendChild(
        row([
          el("td", dateUtc(inv.created)),
          name,
          el("td", what || "nothing charged"),
          el("td", dollars(inv.total_cents), "num"),
          el("td", inv.status),
          sessionsCell,
        ]),
      );
    }
    byId("invoices-empty").hidden = body.children.length > 0;
  }

  /**
   * Downloads a link's CSV: the API needs the token in a header, which a plain link cannot send,
   * so the file is fetched with it and saved under the link's `download` name.
   * @param {HTMLAnchorElement} link
   */
  async function downloadCsv(link) {
    const token = sessionStorage.getItem(KEY);
    if (!token) throw new AuthError("");
    const res = await fetch(link.href, { headers: { authorization: `Bearer ${token}` } });
    if (res.status === 401) {
      sessionStorage.removeItem(KEY);
      throw new AuthError("");
    }
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      throw new Error(data?.error?.message ?? `download failed (${res.status})`);
    }
    const url = URL.createObjectURL(await res.blob());
    const save = el("a", "");
    save.setAttribute("href", url);
    save.setAttribute("download", link.getAttribute("download") ?? "sessions.csv");
    save.hidden = true;
    document.body.appendChild(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  /** @param {SessionRow} s */
  function resultText(s) {
    if (!s.billable) return `not charged: ${s.reason}`;
    return s.charged ? "charged" : "billable";
  }

  /**
   * @param {SessionsPage} page
   * @param {boolean} append
   */
  function renderSessions(page, append) {
    const body = queryAs(byId("sessions-table"), "tbody", HTMLElement);
    if (!append) body.textContent = "";
    for (const s of page.sessions) {
      body.appendChild(
        row([
          el("td", new Date(s.created_at).toLocaleString()),
          el("td", s.session_id, "mono"),
          el("td", s.project_id, "mono hide-narrow"),
          el("td", `${(s.audio_ms / 1000).toFixed(1)} s`, "num"),
          el("td", resultText(s), s.billable ? "" : "not-charged"),
        ]),
      );
    }
    byId("sessions-empty").hidden = body.children.length > 0;
    nextCursor = page.next_cursor;
    byId("sessions-more").hidden = !nextCursor;
  }

  const SVG = "http://www.w3.org/2000/svg";
  /**
   * @param {string} tag
   * @param {Record<string, string | number>} attrs
   * @param {string} [text]
   */
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** @param {DailyUsage} d */
  function renderDaily(d) {
    const days = d.days;
    const chart = byId("chart");
    // Drawn at the container's width, so its text keeps its size on a phone.
    const W = Math.max(300, Math.round(chart.clientWidth) || 600);
    const H = 180;
    const top = 12;
    const bottom = 24;
    const left = 30;
    const max = Math.max(1, ...days.map((x) => x.sessions));
    const slot = (W - left) / days.length;
    const bw = Math.max(2, slot * 0.7);
    const scale = (H - top - bottom) / max;
    let totalOk = 0;
    let totalBad = 0;
    let busiest = days[0];
    for (const x of days) {
      totalOk += x.billable;
      totalBad += x.not_charged;
      if (!busiest || x.sessions > busiest.sessions) busiest = x;
    }
    const root = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": "chart-title",
      "aria-describedby": "chart-desc",
    });
    root.appendChild(svg("title", { id: "chart-title" }, `Sessions per day, ${d.from} to ${d.to} (UTC)`));
    const busiestText =
      busiest && busiest.sessions > 0
        ? `; busiest day ${busiest.day} with ${busiest.sessions} sessions.`
        : ".";
    root.appendChild(
      svg(
        "desc",
        { id: "chart-desc" },
        `${totalOk} successful and ${totalBad} not charged sessions in ${days.length} days${busiestText}` +
          " The table below lists every day.",
      ),
    );
    const axis = { "text-anchor": "end", "font-size": 12, fill: "#374151" };
    root.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#6b7280" }));
    root.appendChild(svg("text", { x: left - 4, y: top + 4, ...axis }, String(max)));
    root.appendChild(svg("text", { x: left - 4, y: H - bottom, ...axis }, "0"));
    days.forEach((x, i) => {
      const xPos = left + i * slot + (slot - bw) / 2;
      const okH = x.billable * scale;
      const badH = x.not_charged * scale;
      if (okH > 0) {
        root.appendChild(
          svg("rect", { x: xPos, y: H - bottom - okH, width: bw, height: okH, fill: "#1d4ed8" }),
        );
      }
      if (badH > 0) {
        root.appendChild(
          svg("rect", { x: xPos, y: H - bottom - okH - badH, width: bw, height: badH, fill: "#b45309" }),
        );
      }
      const last = days.length - 1;
      if (i === 0 || i === last || i === Math.floor(days.length / 2)) {
        const anchor = i === 0 ? "start" : i === last ? "end" : "middle";
        const xText = i === 0 ? xPos : i === last ? xPos + bw : xPos + bw / 2;
        const label = { x: xText, y: H - 6, "text-anchor": anchor, "font-size": 12, fill: "#374151" };
        root.appendChild(svg("text", label, x.day.slice(5)));
      }
    });
    chart.textContent = "";
    chart.appendChild(root);

    const body = queryAs(byId("daily-table"), "tbody", HTMLElement);
    body.textContent = "";
    for (const x of days.slice().reverse()) {
      const reasons = Object.entries(x.not_charged_by_reason)
        .map(([reason, n]) => `${reason}: ${n}`)
        .join(", ");
      body.appendChild(
        row([
          el("td", x.day),
          el("td", x.billable, "num"),
          el("td", x.not_charged, "num"),
          el("td", reasons),
        ]),
      );
    }
  }

  /**
   * @param {string} planId
   * @param {HTMLButtonElement} button
   */
  async function checkout(planId, button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    notice("Opening checkout...");
    try {
      /** @type {{ url: string }} */
      const s = await api("/api/billing/checkout", {
        method: "POST",
        body: JSON.stringify({ plan: planId }),
      });
      location.assign(s.url);
    } catch (e) {
      handleError(e);
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  /** @param {HTMLButtonElement} button */
  async function portal(button) {
    button.disabled = true;
    try {
      /** @type {{ url: string }} */
      const p = await api("/api/billing/portal", { method: "POST" });
      location.assign(p.url);
    } catch (e) {
      handleError(e);
      button.disabled = false;
    }
  }

  /** @param {unknown} e */
  function handleError(e) {
    if (e instanceof AuthError) showSignin("Your token is missing or expired. Paste a new one.");
    else notice(errorText(e), true);
  }

  const DELIVERY = {
    none: "no endpoint",
    pending: "being delivered",
    delivered: "delivered",
    failed: "failed",
  };

  /** @param {Limits} l */
  function renderLimits(l) {
    const cap = l.monthly_cap_cents;
    byId("limits-status").textContent =
      cap === null
        ? `No spend cap. Usage charges this period: ${dollars(l.usage_cents)}.`
        : `Usage charges this period: ${dollars(l.usage_cents)} of your ${dollars(cap)} cap` +
          (l.cap_sessions === null ? "." : ` (${l.sessions_this_period} of ${l.cap_sessions} sessions).`);
    byIdAs("cap-input", HTMLInputElement).value = cap === null ? "" : (cap / 100).toFixed(2);
    byIdAs("thresholds-input", HTMLInputElement).value = l.alert_thresholds.join(", ");
    byIdAs("endpoint-input", HTMLInputElement).value = l.alert_endpoint?.url ?? "";
    const body = queryAs(byId("alerts-table"), "tbody", HTMLElement);
    body.textContent = "";
    for (const a of l.alerts) {
      const tr = document.createElement("tr");
      tr.append(
        el("td", `${a.threshold} %`),
        el("td", new Date(a.crossed_at).toLocaleString(undefined, { timeZone: "UTC" })),
        el("td", `${dollars(a.usage_cents)} of ${dollars(a.cap_cents)}`, "num"),
        el("td", DELIVERY[/** @type {keyof typeof DELIVERY} */ (a.delivery)] ?? a.delivery),
      );
      body.append(tr);
    }
    byId("alerts-table").hidden = l.alerts.length === 0;
    byId("alerts-empty").hidden = l.alerts.length > 0;
  }

  /**
   * Dollars typed by the user to integer cents, exactly (no floating point): null when empty.
   * @param {string} text
   */
  function capCents(text) {
    const t = text.trim();
    if (t === "") return null;
    const m = /^(\d{1,7})(?:\.(\d{1,2}))?$/.exec(t);
    if (!m) throw new Error("Enter the cap in dollars, for example 50 or 12.50, or leave it empty.");
    return Number(m[1]) * 100 + Number((m[2] ?? "").padEnd(2, "0"));
  }

  /** @param {string} text */
  function thresholds(text) {
    return text
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "")
      .map(Number);
  }

  /** @param {SubmitEvent} ev */
  async function saveLimits(ev) {
    ev.preventDefault();
    const button = byIdAs("limits-save", HTMLButtonElement);
    button.disabled = true;
    try {
      const body = {
        monthly_cap_cents: capCents(byIdAs("cap-input", HTMLInputElement).value),
        alert_thresholds: thresholds(byIdAs("thresholds-input", HTMLInputElement).value),
      };
      renderLimits(await api("/api/billing/limits", { method: "PUT", body: JSON.stringify(body) }));
      notice("Your limits are saved.");
    } catch (e) {
      handleError(e);
    } finally {
      button.disabled = false;
    }
  }

  /** @param {SubmitEvent} ev */
  async function saveEndpoint(ev) {
    ev.preventDefault();
    const button = byIdAs("endpoint-save", HTMLButtonElement);
    button.disabled = true;
    try {
      const url = byIdAs("endpoint-input", HTMLInputElement).value.trim();
      /** @type {{ secret: string }} */
      const reg = await api("/api/billing/alert-endpoint", { method: "PUT", body: JSON.stringify({ url }) });
      byId("endpoint-secret-value").textContent = reg.secret;
      byId("endpoint-secret").hidden = false;
      notice("Alerts will be sent to your endpoint.");
    } catch (e) {
      handleError(e);
    } finally {
      button.disabled = false;
    }
  }

  /** @returns {Promise<Usage | null>} */
  async function load() {
    const main = byId("main");
    main.setAttribute("aria-busy", "true");
    try {
      /** @type {[Usage, SessionsPage, DailyUsage, InvoicesPage, Limits]} */
      const [usage, sessions, daily, invoices, limits] = await Promise.all([
        api("/api/billing/usage"),
        api("/api/billing/sessions?limit=20"),
        api("/api/billing/daily?days=30"),
        api("/api/billing/invoices?limit=12"),
        api("/api/billing/limits"),
      ]);
      byId("signin").hidden = true;
      byId("content").hidden = false;
      byId("signout").hidden = false;
      renderUsage(usage);
      renderChanges(usage);
      renderSessions(sessions, false);
      renderInvoices(invoices);
      renderDaily(daily);
      renderLimits(limits);
      document.body.setAttribute("data-loaded", "true");
      return usage;
    } catch (e) {
      handleError(e);
      return null;
    } finally {
      main.removeAttribute("aria-busy");
    }
  }

  for (const b of queryAllAs(document, "button.upgrade", HTMLButtonElement)) {
    b.addEventListener("click", () => checkout(b.getAttribute("data-plan") ?? "", b));
  }
  const resumeButton = byIdAs("resume", HTMLButtonElement);
  resumeButton.addEventListener("click", () => changePlan({ resume: true }, resumeButton));
  const portalButton = byIdAs("portal", HTMLButtonElement);
  portalButton.addEventListener("click", () => portal(portalButton));
  byId("sessions-more").addEventListener("click", async () => {
    try {
      const cursor = encodeURIComponent(nextCursor ?? "");
      renderSessions(await api(`/api/billing/sessions?limit=20&cursor=${cursor}`), true);
    } catch (e) {
      handleError(e);
    }
  });
  byIdAs("limits-form", HTMLFormElement).addEventListener("submit", saveLimits);
  byIdAs("endpoint-form", HTMLFormElement).addEventListener("submit", saveEndpoint);
  byId("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showSignin("");
  });
  onCredentialSubmit(access, "token-form", byIdAs("token-input", HTMLTextAreaElement), load);

  const params = new URLSearchParams(location.search);
  const returned = params.get("checkout");
  if (returned) history.replaceState(null, "", location.pathname + location.hash);

  if (!takeToken()) {
    showSignin("");
    return;
  }
  load().then((usage) => {
    if (returned === "canceled") notice("Checkout was canceled: nothing was charged.");
    if (returned === "success" && usage) {
      notice("Thank you! Your payment is being confirmed; your plan updates in a moment.");
      let tries = 0;
      const timer = setInterval(() => {
        tries += 1;
        load().then((u) => {
          if ((u && u.plan !== "free") || tries >= 12) {
            clearInterval(timer);
            if (u && u.plan !== "free") notice(`You are now on ${plan(u.plan).name}.`);
          }
        });
      }, 5000);
    }
  });
})();
