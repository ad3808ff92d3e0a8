/**
 * The lifecycle chaos run's money check, pure: from the workload alone (the timeline of what the
 * harness did, the sessions it sent and when their verdicts could come) the model (model.ts)
 * says, per billing window, how many billable sessions it holds (N), how many of them Stripe's
 * invoice for it must bill (Q: those judged and posted before that invoice was final) and so what
 * the adjustments must add (the price of N minus the price of Q, docs/billing.md "Frozen series
 * and adjustments"). Then every invoice Stripe holds for the customers is compared with that,
 * line by line: metered lines, fees, adjustments (invoice items), nothing else.
 */
import {
  type Model,
  meteredAmount,
  type PaidPlan,
  type PriceVersion,
  type Window,
  windowPrices,
} from "./model";

/** A session of the run: its owner, its billing time, whether it is billable, the phase of its verdict. */
export interface LcSession {
  id: string;
  user: string;
  billedAt: number;
  billable: boolean;
  /** The harness step after which its verdict could come (its last telemetry was sent then). */
  phase: number;
}

/** A move of the shared clock (ms), at a harness step: due work (renewals, finalizations) ran in it. */
export interface ClockMove {
  phase: number;
  from: number;
  to: number;
}

export interface WindowExpectation {
  key: string;
  window: Window;
  /** Billable sessions attributed to the window. */
  sessions: number;
  /** Sessions the window's own invoice bills; null while the window is open (no invoice yet). */
  onInvoice: number | null;
  /** The harness step that fixed that invoice's quantity (-Infinity: Stripe bills none of it). */
  cut: number | null;
}

export function windowKey(user: string, plan: string, start: number): string {
  return `${user}|${plan}|${start}`;
}

/** The window's invoice is final at `cut`: verdicts of earlier steps are on it, later ones adjusted. */
function cutOf(w: Window, moves: readonly ClockMove[], graceMs: number): number | null | "unfinalized" {
  const c = w.closing;
  if (c === null) return null;
  if (c.kind === "now_dropped") return Number.NEGATIVE_INFINITY;
  if (c.kind === "now_billed") return c.phase;
  // a renewal, a final invoice at the period end, and a cancel now's final invoice are drafts for
  // the grace period: usage reported until they are final is on them
  const due = w.end + graceMs;
  const move = moves.find((m) => m.from < due && due <= m.to);
  return move ? move.phase : "unfinalized";
}

export function expectWindows(
  model: Model,
  sessions: readonly LcSession[],
  moves: readonly ClockMove[],
  graceMs: number,
): { windows: Map<string, WindowExpectation>; problems: string[] } {
  const windows = new Map<string, WindowExpectation>();
  const problems: string[] = [];
  for (const list of model.windows.values()) {
    for (const w of list) {
      const cut = cutOf(w, moves, graceMs);
      if (cut === "unfinalized") {
        problems.push(
          `window ${windowKey(w.user, w.plan, w.start)} ended ${new Date(w.end).toISOString()} but no clock move passed its finalization`,
        );
      }
      windows.set(windowKey(w.user, w.plan, w.start), {
        key: windowKey(w.user, w.plan, w.start),
        window: w,
        sessions: 0,
        onInvoice: cut === null || cut === "unfinalized" ? null : 0,
        cut: cut === "unfinalized" ? null : cut,
      });
    }
  }
  for (const s of sessions) {
    if (!s.billable) continue;
    const w = model.windows.get(s.user)?.find((x) => x.start <= s.billedAt && s.billedAt < x.end);
    if (!w) continue; // free usage
    const e = windows.get(windowKey(w.user, w.plan, w.start));
    if (!e) continue;
    e.sessions += 1;
    if (e.onInvoice !== null && e.cut !== null && s.phase < e.cut) e.onInvoice += 1;
  }
  return { windows, problems };
}

/** What the harness knows of a price it created (through the catalog, before and after publishing). */
export interface PriceInfo {
  plan: PaidPlan;
  version: number;
  kind: "metered" | "fee";
}

export interface LineView {
  id: string;
  amount: number;
  quantity: number | null;
  price: string | null;
  /** ms */
  periodStart: number;
  /** The invoice item a line comes from, if any. */
  invoiceItem: string | null;
  description: string | null;
}

export interface InvoiceView {
  id: string;
  customer: string;
  status: string;
  billingReason: string | null;
  total: number;
  lines: LineView[];
}

/** An invoice item of a customer: an adjustment of ours when its metadata says so. */
export interface ItemView {
  id: string;
  customer: string;
  amount: number;
  /** The invoice carrying it, null while pending (it rides on the next invoice). */
  invoice: string | null;
  adjustment: { user: string; plan: string; periodStart: number } | null;
}

export interface LifecycleFacts {
  model: Model;
  windows: Map<string, WindowExpectation>;
  invoices: InvoiceView[];
  items: ItemView[];
  prices: Map<string, PriceInfo>;
  /** Stripe customer -> user. */
  customers: Map<string, string>;
}

interface Billed {
  quantity: number;
  amount: number;
  invoices: string[];
}

function feeOf(versions: readonly PriceVersion[], w: Window): number {
  return versions[w.version]?.[w.plan].fee ?? Number.NaN;
}

/**
 * Every finalized invoice of every customer against the model, and every window against what its
 * invoices and adjustments bill. Returns one line per mismatch, naming the customer and invoice.
 */
export function checkLifecycle(f: LifecycleFacts): string[] {
  const out: string[] = [];
  const metered = new Map<string, Billed>();
  const fees = new Map<string, Billed>();
  const adjusted = new Map<string, number>();
  const itemById = new Map(f.items.map((i) => [i.id, i]));
  const windowsOf = (user: string) => f.model.windows.get(user) ?? [];
  const add = (map: Map<string, Billed>, key: string, quantity: number, amount: number, invoice: string) => {
    const b = map.get(key) ?? { quantity: 0, amount: 0, invoices: [] };
    b.quantity += quantity;
    b.amount += amount;
    b.invoices.push(invoice);
    map.set(key, b);
  };

  for (const inv of f.invoices) {
    const user = f.customers.get(inv.customer);
    const where = `customer ${inv.customer} (user ${user ?? "?"}) invoice ${inv.id} (${inv.billingReason})`;
    if (user === undefined) {
      out.push(`${where}: an invoice of a customer the run never made`);
      continue;
    }
    if (inv.status === "draft") {
      out.push(`${where}: still a draft after the run's last finalization`);
      continue;
    }
    const sum = inv.lines.reduce((n, l) => n + l.amount, 0);
    if (sum !== inv.total) out.push(`${where}: lines add up to ${sum}, total is ${inv.total}`);
    for (const line of inv.lines) {
      const item = line.invoiceItem ? itemById.get(line.invoiceItem) : undefined;
      const what = `${where} line ${line.id} (${line.description ?? ""}, ${line.amount}c)`;
      if (item?.adjustment) {
        const a = item.adjustment;
        const key = windowKey(a.user, a.plan, a.periodStart);
        if (a.user !== user) out.push(`${what}: an adjustment of user ${a.user}`);
        if (!f.windows.has(key))
          out.push(`${what}: an adjustment for ${key}, a window the model does not have`);
        if (item.amount !== line.amount) out.push(`${what}: its item says ${item.amount}c`);
        adjusted.set(key, (adjusted.get(key) ?? 0) + line.amount);
        continue;
      }
      const price = line.price ? f.prices.get(line.price) : undefined;
      if (!price) {
        out.push(`${what}: a line the policy does not make (price ${line.price ?? "none"})`);
        continue;
      }
      const w = windowsOf(user).find((x) => x.plan === price.plan && x.start === line.periodStart);
      const quantity = line.quantity ?? 0;
      if (!w) {
        if (price.kind === "metered" && quantity === 0 && line.amount === 0) continue; // a $0 line (Checkout's first invoice)
        out.push(
          `${what}: ${price.kind} line for ${price.plan} from ${new Date(line.periodStart).toISOString()}, the model has no such window`,
        );
        continue;
      }
      const key = windowKey(w.user, w.plan, w.start);
      if (price.kind === "metered" && price.version !== w.version && !(quantity === 0 && line.amount === 0)) {
        out.push(`${what}: billed at price version ${price.version}, the window is on version ${w.version}`);
      }
      add(price.kind === "metered" ? metered : fees, key, quantity, line.amount, inv.id);
    }
  }
  for (const item of f.items) {
    if (!item.adjustment || item.invoice !== null) continue;
    const a = item.adjustment;
    const key = windowKey(a.user, a.plan, a.periodStart);
    if (!f.windows.has(key))
      out.push(`pending item ${item.id} of ${item.customer}: an adjustment for ${key}, unknown window`);
    adjusted.set(key, (adjusted.get(key) ?? 0) + item.amount);
  }
  for (const item of f.items) {
    if (!item.adjustment || item.invoice === null) continue;
    if (!f.invoices.some((i) => i.id === item.invoice && i.lines.some((l) => l.invoiceItem === item.id))) {
      out.push(
        `adjustment item ${item.id} of ${item.customer}: on invoice ${item.invoice}, which does not list it`,
      );
    }
  }

  for (const e of f.windows.values()) {
    const w = e.window;
    const where = `user ${w.user} ${w.plan} window ${new Date(w.start).toISOString()}..${new Date(w.end).toISOString()} (price version ${w.version}, ${e.sessions} sessions)`;
    const price = windowPrices(f.model, w).metered;
    const billed = metered.get(e.key) ?? { quantity: 0, amount: 0, invoices: [] };
    const expected = e.onInvoice ?? 0;
    if (billed.quantity !== expected || billed.amount !== meteredAmount(price, expected)) {
      out.push(
        `${where}: invoices [${billed.invoices.join(",")}] bill ${billed.quantity} sessions for ${billed.amount}c, expected ${expected} for ${meteredAmount(price, expected)}c`,
      );
    }
    const adj = adjusted.get(e.key) ?? 0;
    const adjExpected =
      e.onInvoice === null ? 0 : meteredAmount(price, e.sessions) - meteredAmount(price, expected);
    if (adj !== adjExpected) {
      out.push(
        `${where}: adjustments bill ${adj}c, expected ${adjExpected}c (${e.sessions - expected} sessions after its invoice)`,
      );
    }
    const fee = fees.get(e.key) ?? { quantity: 0, amount: 0, invoices: [] };
    const feeExpected = w.plan === "pro" ? feeOf(f.model.versions, w) : 0;
    const feeCount = w.plan === "pro" ? 1 : 0;
    if (fee.invoices.length !== feeCount || fee.amount !== feeExpected) {
      out.push(
        `${where}: fee lines [${fee.invoices.join(",")}] bill ${fee.amount}c, expected ${feeCount} of ${feeExpected}c`,
      );
    }
  }
  return out;
}
