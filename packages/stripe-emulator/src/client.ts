/**
 * Typed helper for the `/_emulator/*` test controls. Uses only `fetch`, so it runs in Node and
 * in workerd: `const emu = new EmulatorClient("http://127.0.0.1:12111")`.
 */
import type {
  CallView,
  CheckoutDetailsRequest,
  ClockMoveResult,
  ClockView,
  ClosePeriodRequest,
  ClosePeriodResult,
  CompleteCheckoutResult,
  DrainedDelivery,
  FaultRequest,
  FaultView,
  InvoiceSettingsView,
  MeterEventView,
  MeterUsage,
  MeterUsageByCustomer,
  PayInvoiceResult,
  StripeEventView,
  TaxRatesView,
  WebhookConfigRequest,
  WebhookDeliveryView,
} from "./protocol";

export type * from "./protocol";

export class EmulatorRequestError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
    message: string,
  ) {
    super(message);
  }
}

export interface UsageQuery {
  customer?: string;
  start?: number;
  end?: number;
}

export class EmulatorClient {
  private readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly fetcher: typeof fetch = (input, init) => fetch(input, init),
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetcher(`${this.baseUrl}/_emulator${path}`, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : null;
    if (!res.ok) {
      throw new EmulatorRequestError(
        res.status,
        parsed,
        `${method} /_emulator${path} -> ${res.status}: ${text}`,
      );
    }
    return parsed as T;
  }

  health(): Promise<{ ok: boolean; url: string }> {
    return this.call("GET", "/health");
  }

  reset(): Promise<{ ok: boolean }> {
    return this.call("POST", "/reset");
  }

  /** Completes a session as the customer would; `details` is what they enter (billing address, tax ID). */
  completeCheckout(sessionId: string, details?: CheckoutDetailsRequest): Promise<CompleteCheckoutResult> {
    return this.call("POST", `/checkout/sessions/${encodeURIComponent(sessionId)}/complete`, details);
  }

  taxRates(): Promise<TaxRatesView> {
    return this.call("GET", "/tax_rates");
  }

  /** Replaces the flat tax rate (percent) per country the emulator's Stripe Tax applies. */
  setTaxRates(rates: Record<string, number>): Promise<TaxRatesView> {
    return this.call("POST", "/tax_rates", { rates });
  }

  failNextPayment(customerId: string): Promise<{ customer: string; fail_next_payment: true }> {
    return this.call("POST", `/customers/${encodeURIComponent(customerId)}/fail_next_payment`);
  }

  closePeriod(subscriptionId: string, request: ClosePeriodRequest = {}): Promise<ClosePeriodResult> {
    return this.call("POST", `/subscriptions/${encodeURIComponent(subscriptionId)}/close_period`, request);
  }

  payInvoice(invoiceId: string): Promise<PayInvoiceResult> {
    return this.call("POST", `/invoices/${encodeURIComponent(invoiceId)}/pay`);
  }

  addFault(fault: FaultRequest): Promise<{ faults: FaultView[] }> {
    return this.call("POST", "/faults", fault);
  }

  faults(): Promise<{ faults: FaultView[] }> {
    return this.call("GET", "/faults");
  }

  clearFaults(): Promise<{ faults: FaultView[] }> {
    return this.call("DELETE", "/faults");
  }

  clock(): Promise<ClockView> {
    return this.call("GET", "/clock");
  }

  /**
   * Moves the clock forward (or back, with a negative number). Moving forward runs the work that
   * falls due on the way unless `process: false`.
   */
  advanceClock(
    seconds: number,
    opts: { frozen?: boolean; process?: boolean } = {},
  ): Promise<ClockMoveResult> {
    return this.call("POST", "/clock", { advance_seconds: seconds, ...opts });
  }

  /** Sets the clock; `frozen: true` stops it there (deterministic tests), `false` lets it run. */
  setClock(now: number, opts: { frozen?: boolean; process?: boolean } = {}): Promise<ClockMoveResult> {
    return this.call("POST", "/clock", { now, ...opts });
  }

  invoiceSettings(): Promise<InvoiceSettingsView> {
    return this.call("GET", "/invoice_settings");
  }

  /** Sets the finalization grace period (a Dashboard setting on Stripe, 0 to 72 hours). */
  setInvoiceSettings(settings: InvoiceSettingsView): Promise<InvoiceSettingsView> {
    return this.call("POST", "/invoice_settings", settings);
  }

  async calls(): Promise<CallView[]> {
    return (await this.call<{ calls: CallView[] }>("GET", "/calls")).calls;
  }

  resetCalls(): Promise<{ calls: CallView[] }> {
    return this.call("POST", "/calls/reset");
  }

  async events(type?: string): Promise<StripeEventView[]> {
    const query = type ? `?type=${encodeURIComponent(type)}` : "";
    return (await this.call<{ events: StripeEventView[] }>("GET", `/events${query}`)).events;
  }

  async drainWebhooks(): Promise<DrainedDelivery[]> {
    return (await this.call<{ deliveries: DrainedDelivery[] }>("POST", "/webhooks/drain")).deliveries;
  }

  configureWebhooks(config: WebhookConfigRequest): Promise<{ url: string | null }> {
    return this.call("POST", "/webhooks/config", config);
  }

  webhookDeliveries(): Promise<{ url: string | null; deliveries: WebhookDeliveryView[] }> {
    return this.call("GET", "/webhooks");
  }

  /** Usage of one customer on the meter with this event name, straight from the emulator's state. */
  meterUsage(eventName: string, query: UsageQuery & { customer: string }): Promise<MeterUsage> {
    return this.call("GET", `/meters/${encodeURIComponent(eventName)}/usage${toQuery(query)}`);
  }

  /** Usage per customer on the meter with this event name. */
  meterUsageByCustomer(
    eventName: string,
    query: Omit<UsageQuery, "customer"> = {},
  ): Promise<MeterUsageByCustomer> {
    return this.call("GET", `/meters/${encodeURIComponent(eventName)}/usage${toQuery(query)}`);
  }

  /** Every meter event received (counted or rejected as a duplicate), oldest first, with real receipt times. */
  async meterEvents(eventName: string, customer?: string): Promise<MeterEventView[]> {
    const q = customer ? `?customer=${encodeURIComponent(customer)}` : "";
    const res = await this.call<{ events: MeterEventView[] }>(
      "GET",
      `/meters/${encodeURIComponent(eventName)}/events${q}`,
    );
    return res.events;
  }
}

function toQuery(query: UsageQuery): string {
  const parts = Object.entries(query)
    .filter((entry): entry is [string, string | number] => entry[1] !== undefined)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join("&")}` : "";
}
