/**
 * The load generator, run as a separate process by run.ts so it does not share an event loop
 * with the stack's tooling: autocannon over loopback, bounded in requests and seconds, each
 * request carrying `eventsPerRequest` fresh events. Prints one JSON result line.
 */
import autocannon from "autocannon";
import { sessionEvents } from "./workload";

export interface LoadConfig {
  url: string;
  key: string;
  eventsPerRequest: number;
  connections: number;
  seconds: number;
  maxRequests: number;
  users: number;
  tag: string;
}

export interface LoadResult {
  requests: number;
  events: number;
  seconds: number;
  eventsPerSecond: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

async function main() {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as LoadConfig;
  let sessionCounter = 0;
  const started = Date.now();
  // Per connection: the events of the session in flight, handed out `eventsPerRequest` at a time.
  const nextEvents = (ctx: { queue?: Array<Record<string, unknown>> }) => {
    const out: Array<Record<string, unknown>> = [];
    while (out.length < cfg.eventsPerRequest) {
      if (!ctx.queue || ctx.queue.length === 0) {
        const n = sessionCounter++;
        ctx.queue = sessionEvents({
          sessionId: `${cfg.tag}-${process.pid}-${n}`,
          userId: `bench-free-${n % cfg.users}`,
          billable: n % 4 !== 0,
          start: started - 60_000,
        });
      }
      const e = ctx.queue.shift();
      if (e) out.push(e);
    }
    return out;
  };
  const result = await autocannon({
    url: cfg.url,
    connections: cfg.connections,
    duration: cfg.seconds,
    maxOverallRequests: cfg.maxRequests,
    method: "POST",
    headers: {
      authorization: `Bearer ${cfg.key}`,
      "content-type":
        cfg.eventsPerRequest === 1 ? "application/cloudevents+json" : "application/cloudevents-batch+json",
    },
    requests: [
      {
        setupRequest: (req, context) => {
          const events = nextEvents(context as { queue?: Array<Record<string, unknown>> });
          return { ...req, body: JSON.stringify(cfg.eventsPerRequest === 1 ? events[0] : events) };
        },
      },
    ],
  });
  const seconds = result.duration;
  const ok = result["2xx"];
  const out: LoadResult = {
    requests: ok,
    events: ok * cfg.eventsPerRequest,
    seconds,
    requestsPerSecond: ok / seconds,
    eventsPerSecond: (ok * cfg.eventsPerRequest) / seconds,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
