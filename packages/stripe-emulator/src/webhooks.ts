/**
 * Stripe events: stored in order, served by GET /v1/events, and delivered as signed webhooks
 * (`Stripe-Signature: t=...,v1=HMAC-SHA256(secret, "t.payload")`) to the configured URL, one at
 * a time in emission order. Events that were not delivered can be drained by tests instead.
 */
import { createHmac } from "node:crypto";
import { stripIncludables } from "./expand";
import type { DrainedDelivery, WebhookDeliveryView } from "./protocol";
import { API_VERSION } from "./protocol";
import { type EmulatorState, type EventRec, newId } from "./state";

export interface RequestInfo {
  id: string | null;
  idempotencyKey: string | null;
}

export const NO_REQUEST: RequestInfo = { id: null, idempotencyKey: null };

const RETRY_DELAYS_MS = [250, 1000];

export function signatureHeader(payload: string, secret: string, t = Math.floor(Date.now() / 1000)): string {
  const v1 = createHmac("sha256", secret).update(`${t}.${payload}`, "utf8").digest("hex");
  return `t=${t},v1=${v1}`;
}

export class Webhooks {
  url: string | null;
  secret: string;
  private queue: EventRec[] = [];
  private running: Promise<void> | null = null;
  private generation = 0;

  constructor(
    private readonly state: EmulatorState,
    opts: { url?: string | null; secret: string },
    private readonly log: (line: string) => void = () => {},
  ) {
    this.url = opts.url ?? null;
    this.secret = opts.secret;
  }

  /** Records an event (snapshotting `object`) and queues its delivery. */
  emit(
    type: string,
    object: unknown,
    request: RequestInfo,
    previousAttributes?: Record<string, unknown>,
  ): EventRec {
    const id = newId("evt", 24);
    const created = this.state.now();
    const data: Record<string, unknown> = { object: stripIncludables(object) };
    if (previousAttributes && Object.keys(previousAttributes).length > 0) {
      data.previous_attributes = stripIncludables(previousAttributes);
    }
    const body = {
      id,
      object: "event",
      api_version: API_VERSION,
      created,
      data,
      livemode: false,
      pending_webhooks: this.url ? 1 : 0,
      request: { id: request.id, idempotency_key: request.idempotencyKey },
      type,
    };
    const payload = JSON.stringify(body, null, 2);
    const rec: EventRec = {
      id,
      type,
      created,
      payload,
      body: JSON.parse(payload),
      delivery: { status: this.url ? "pending" : "none", attempts: 0, httpStatus: null, error: null },
    };
    this.state.events.push(rec);
    if (this.url) {
      this.queue.push(rec);
      this.kick();
    }
    return rec;
  }

  configure(url: string | null, secret?: string): void {
    this.url = url;
    if (secret) this.secret = secret;
  }

  /** Events neither delivered nor drained yet, signed now; marks them drained. */
  drain(): DrainedDelivery[] {
    const out: DrainedDelivery[] = [];
    for (const rec of this.state.events) {
      if (rec.delivery.status === "delivered" || rec.delivery.status === "drained") continue;
      rec.delivery.status = "drained";
      out.push({
        event_id: rec.id,
        type: rec.type,
        payload: rec.payload,
        signature: signatureHeader(rec.payload, this.secret),
      });
    }
    return out;
  }

  deliveries(): WebhookDeliveryView[] {
    return this.state.events.map((rec) => ({
      event_id: rec.id,
      type: rec.type,
      status: rec.delivery.status,
      attempts: rec.delivery.attempts,
      http_status: rec.delivery.httpStatus,
      error: rec.delivery.error,
    }));
  }

  /** Resolves once every queued delivery has been attempted. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Drops queued deliveries (on reset and close). */
  stop(): void {
    this.generation += 1;
    this.queue = [];
  }

  /** Starts the delivery loop unless it is running; it restarts itself for events queued meanwhile. */
  private kick(): void {
    if (this.running) return;
    this.running = this.pump(this.generation).finally(() => {
      this.running = null;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async pump(generation: number): Promise<void> {
    while (generation === this.generation) {
      const rec = this.queue.shift();
      if (!rec) return;
      if (rec.delivery.status !== "drained") await this.deliver(rec, generation);
    }
  }

  private async deliver(rec: EventRec, generation: number): Promise<void> {
    for (let attempt = 0; attempt <= RETRY_DELAYS_MS.length; attempt++) {
      const url = this.url;
      if (!url || generation !== this.generation || rec.delivery.status === "drained") return;
      rec.delivery.attempts += 1;
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signatureHeader(rec.payload, this.secret),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
          },
          body: rec.payload,
          signal: AbortSignal.timeout(10_000),
        });
        await res.arrayBuffer();
        rec.delivery.httpStatus = res.status;
        rec.delivery.error = null;
        if (res.ok) {
          rec.delivery.status = "delivered";
          this.log(`webhook ${rec.type} ${rec.id} -> ${res.status}`);
          return;
        }
      } catch (err) {
        rec.delivery.error = err instanceof Error ? err.message : String(err);
      }
      const delay = RETRY_DELAYS_MS[attempt];
      if (delay === undefined) break;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    if (rec.delivery.status === "pending") rec.delivery.status = "failed";
    this.log(`webhook ${rec.type} ${rec.id} failed: ${rec.delivery.error ?? rec.delivery.httpStatus}`);
  }
}
