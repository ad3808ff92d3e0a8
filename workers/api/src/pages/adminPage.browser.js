// @ts-check
/**
 * The admin page's browser script (run after layout.browser.js). It takes the admin key typed in
 * (kept in sessionStorage for the tab's life) and shows the admin API's metrics for a month, the
 * dead letters with replay buttons and the latest reconciliation runs.
 *
 * The parts of the admin API's answers it reads (docs/operations.md):
 * @typedef {{ mrr_cents: number, arpu_cents: number, paying_customers: number,
 *   paying_by_plan: { payg: number, pro: number }, churn_rate: number | null,
 *   conversion_rate: number | null, success_rate: number | null, sessions_billable: number,
 *   sessions_total: number, invoiced_cents: number, failed_by_reason: Record<string, number> }} Metrics
 * @typedef {{ id: string, summary: string, error: string, attempts: number, first_failed_at: string,
 *   replayed_at: string | null, replay_count: number }} DeadLetter
 * @typedef {{ dead_letters: DeadLetter[], next_cursor: string | null }} DeadLetterPage
 * @typedef {{ replayed: number, ids: string[], skipped: { id: string, reason: string }[],
 *   more: boolean }} Replayed
 * @typedef {{ started_at: string, finished_at: string | null, periods_checked: number,
 *   mismatches: number, repaired: number, report: unknown }} ReconciliationRun
 * @typedef {{ ids: string[], force: boolean } | { queue: string, all: true }} ReplaySelection
 */
(() => {
  const KEY = "aigate.adminKey";
  /** @type {ApiAccess} */
  const access = {
    storageKey: KEY,
    refusedStatuses: [401, 403],
    missingMessage: "Enter the admin key.",
    refusedMessage: "The key was refused.",
  };
  /** @type {string | null} */
  let dlCursor = null;

  const keyInput = byIdAs("key-input", HTMLInputElement);
  const monthInput = byIdAs("month-input", HTMLInputElement);
  const queueSelect = byIdAs("dl-queue", HTMLSelectElement);
  const stateSelect = byIdAs("dl-state", HTMLSelectElement);
  const replayAll = byIdAs("replay-all", HTMLButtonElement);

  /**
   * @param {string} path
   * @param {{ method?: string, body?: string }} [init]
   */
  const api = (path, init) => callApi(access, path, init);

  /** @param {number | null} r */
  function pct(r) {
    return r === null ? "n/a" : `${(r * 100).toFixed(1)} %`;
  }

  /** @param {string | null} iso */
  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "no";
  }

  /** @param {unknown} e */
  function handleError(e) {
    if (e instanceof AuthError) {
      byId("content").hidden = true;
      byId("forget").hidden = true;
      notice(e.message, true);
      keyInput.focus();
    } else {
      notice(errorText(e), true);
    }
  }

  /**
   * @param {string} label
   * @param {string} value
   */
  function metric(label, value) {
    const d = document.createElement("div");
    d.appendChild(el("dt", label));
    d.appendChild(el("dd", value));
    return d;
  }

  async function loadMetrics() {
    /** @type {Metrics} */
    const m = await api(`/admin/metrics?month=${encodeURIComponent(monthInput.value)}`);
    const dl = byId("metrics");
    dl.textContent = "";
    const paying = `${m.paying_customers} (pay-as-you-go ${m.paying_by_plan.payg}, pro ${m.paying_by_plan.pro})`;
    /** @type {[string, string][]} */
    const metrics = [
      ["MRR", dollars(m.mrr_cents)],
      ["ARPU", dollars(m.arpu_cents)],
      ["Paying customers", paying],
      ["Churn rate", pct(m.churn_rate)],
      ["Free-to-paid conversion", pct(m.conversion_rate)],
      ["Success rate", pct(m.success_rate)],
      ["Sessions", `${m.sessions_billable} billable of ${m.sessions_total}`],
      ["Invoiced", dollars(m.invoiced_cents)],
    ];
    for (const [label, value] of metrics) dl.appendChild(metric(label, value));
    const body = queryAs(byId("failed-table"), "tbody", HTMLElement);
    body.textContent = "";
    for (const [reason, sessions] of Object.entries(m.failed_by_reason)) {
      body.appendChild(row([el("td", reason, "mono"), el("td", sessions, "num")]));
    }
  }

  /** @param {DeadLetter} d */
  function replayButton(d) {
    const b = el("button", d.replayed_at ? "Replay again" : "Replay");
    b.type = "button";
    b.className = d.replayed_at ? "secondary" : "";
    b.setAttribute("aria-label", `${d.replayed_at ? "Replay again" : "Replay"} ${d.id}`);
    b.addEventListener("click", () => replay({ ids: [d.id], force: Boolean(d.replayed_at) }, b));
    return b;
  }

  /**
   * @param {DeadLetterPage} page
   * @param {boolean} append
   */
  function renderDeadLetters(page, append) {
    const body = queryAs(byId("dl-table"), "tbody", HTMLElement);
    if (!append) body.textContent = "";
    for (const d of page.dead_letters) {
      const who = el("td");
      who.appendChild(el("div", d.id, "mono"));
      who.appendChild(el("div", d.summary, "muted"));
      const why = el("td");
      why.appendChild(el("div", d.error));
      why.appendChild(el("div", `${d.attempts} attempt(s)`, "muted"));
      const failed = el("td", when(d.first_failed_at), "hide-narrow");
      const replayed = el("td", d.replayed_at ? `${when(d.replayed_at)} (${d.replay_count}x)` : "no");
      const action = el("td");
      action.appendChild(replayButton(d));
      const tr = row([who, why, failed, replayed, action]);
      tr.setAttribute("data-id", d.id);
      body.appendChild(tr);
    }
    byId("dl-empty").hidden = body.children.length > 0;
    dlCursor = page.next_cursor;
    byId("dl-more").hidden = !dlCursor;
  }

  function dlQuery() {
    let q = `state=${encodeURIComponent(stateSelect.value)}&limit=50`;
    if (queueSelect.value) q += `&queue=${encodeURIComponent(queueSelect.value)}`;
    return q;
  }

  async function loadDeadLetters() {
    replayAll.disabled = !queueSelect.value;
    renderDeadLetters(await api(`/admin/dead-letters?${dlQuery()}`), false);
  }

  /**
   * @param {ReplaySelection} selection
   * @param {HTMLButtonElement} button
   */
  async function replay(selection, button) {
    button.disabled = true;
    try {
      /** @type {Replayed} */
      const r = await api("/admin/dead-letters/replay", { method: "POST", body: JSON.stringify(selection) });
      let text = `Replayed ${r.replayed} dead letter(s)`;
      if (r.ids.length) text += `: ${r.ids.join(", ")}`;
      if (r.skipped.length) text += `. Skipped ${r.skipped.map((s) => `${s.id} (${s.reason})`).join(", ")}`;
      if (r.more) text += ". More remain: replay again.";
      notice(`${text}.`);
      await loadDeadLetters();
    } catch (e) {
      handleError(e);
    } finally {
      button.disabled = button === replayAll ? !queueSelect.value : false;
    }
  }

  async function loadReconciliation() {
    /** @type {{ runs: ReconciliationRun[] }} */
    const r = await api("/admin/reconciliation?limit=10");
    const body = queryAs(byId("rec-table"), "tbody", HTMLElement);
    body.textContent = "";
    for (const run of r.runs) {
      const report = el("td");
      const items = Array.isArray(run.report) ? run.report : [run.report];
      if (items.length === 0 || (items.length === 1 && items[0] === null))
        report.textContent = "no differences";
      else {
        const details = el("details");
        details.appendChild(el("summary", `${items.length} item(s)`));
        details.appendChild(el("pre", JSON.stringify(run.report, null, 2)));
        report.appendChild(details);
      }
      body.appendChild(
        row([
          el("td", when(run.started_at) + (run.finished_at ? "" : " (running)")),
          el("td", run.periods_checked, "num"),
          el("td", run.mismatches, "num"),
          el("td", run.repaired, "num"),
          report,
        ]),
      );
    }
    byId("rec-empty").hidden = r.runs.length > 0;
  }

  async function loadAll() {
    try {
      await loadMetrics();
      byId("content").hidden = false;
      byId("forget").hidden = false;
      await Promise.all([loadDeadLetters(), loadReconciliation()]);
      document.body.setAttribute("data-loaded", "true");
    } catch (e) {
      handleError(e);
    }
  }

  monthInput.value = new Date().toISOString().slice(0, 7);
  onCredentialSubmit(access, "key-form", keyInput, loadAll);
  byId("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    byId("content").hidden = true;
    byId("forget").hidden = true;
    notice("Key forgotten.");
  });
  byId("month-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadMetrics().catch(handleError);
  });
  byId("dl-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadDeadLetters().catch(handleError);
  });
  queueSelect.addEventListener("change", () => {
    replayAll.disabled = !queueSelect.value;
  });
  replayAll.addEventListener("click", () => {
    const queue = queueSelect.value;
    if (queue) replay({ queue, all: true }, replayAll);
  });
  byId("dl-more").addEventListener("click", async () => {
    try {
      const cursor = encodeURIComponent(dlCursor ?? "");
      renderDeadLetters(await api(`/admin/dead-letters?${dlQuery()}&cursor=${cursor}`), true);
    } catch (e) {
      handleError(e);
    }
  });

  if (sessionStorage.getItem(KEY)) loadAll();
})();
