/**
 * The end-to-end phases' load: session telemetry POSTed as 50-event requests (10 sessions
 * each), either as fast as a few connections take it or paced over a number of seconds.
 */

import { DEV_INGEST_KEY } from "@aigate/scripts/dev/credentials";
import { type SessionSpec, sessionEvents } from "../workload";

export interface Fed {
  /** Epoch ms of the first request. */
  started: number;
  /** Epoch ms when the last request was accepted. */
  finished: number;
}

/** POSTs sessions as one batch request, retrying 503s. */
async function post(url: string, sessions: SessionSpec[]) {
  const body = JSON.stringify(sessions.flatMap((s) => sessionEvents(s)));
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${url}/v1/events`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${DEV_INGEST_KEY}`,
        "content-type": "application/cloudevents-batch+json",
      },
      body,
    });
    if (res.status === 202) return;
    if (attempt > 5) throw new Error(`POST /v1/events: ${res.status} ${await res.text()}`);
    await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
  }
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** As fast as `concurrency` requests in flight allow. */
export async function feedBurst(url: string, sessions: SessionSpec[], concurrency: number): Promise<Fed> {
  const queue = chunks(sessions, 10);
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) await post(url, c);
    }),
  );
  return { started, finished: Date.now() };
}

/** Paced so that the whole list takes `seconds`. */
export async function feedPaced(url: string, sessions: SessionSpec[], seconds: number): Promise<Fed> {
  const requests = chunks(sessions, 10);
  const gapMs = (seconds * 1000) / requests.length;
  const started = Date.now();
  const inflight: Array<Promise<void>> = [];
  for (const [i, c] of requests.entries()) {
    const wait = started + i * gapMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    inflight.push(post(url, c));
  }
  await Promise.all(inflight);
  return { started, finished: Date.now() };
}

/** Seconds between two epoch-ms instants. */
export const seconds = (from: number, to: number) => (to - from) / 1000;
