/**
 * Ingest alone against the runtime's ceiling: the ingest worker behind the same front hop as the
 * no-op, with its own migrated and seeded D1 and a telemetry queue nobody consumes, so that the
 * pipeline's own work does not compete for the cores. Rounds alternate no-op and ingest, so both
 * see the same machine over the same minutes; the ratio reported is the median of the rounds'.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { DEV_SETTINGS, prepareDatabase, writeDevConfigs } from "@aigate/scripts/dev/stack";
import { type LogLine, logLines, logSize, queueMessagesPerEvent } from "../lib/logs";
import type { Phase, Row } from "../lib/phase";
import { measureIngest, type Server, startWrangler } from "../lib/processes";
import { fmt } from "../lib/report";
import { BENCH, PRODUCTION_LOGGING } from "../lib/settings";
import type { LoadResult } from "../load";

/** Events per request measured: single events and the gateway's batches. */
export const REQUEST_SIZES = [1, 50] as const;
export type RequestSize = (typeof REQUEST_SIZES)[number];
export type BySize<T> = Record<`${RequestSize}`, T>;

/** One measurement per request size, one after the other. */
export async function bySize<T>(measure: (n: RequestSize) => Promise<T>): Promise<BySize<T>> {
  const out: Partial<BySize<T>> = {};
  for (const n of REQUEST_SIZES) out[`${n}`] = await measure(n);
  return out as BySize<T>;
}

const RATIO_TARGET = { op: ">=", bound: 0.7 } as const;
/** At the gateway's batches (50 events per request), ingest should come within 15 % of the no-op. */
const RATIO_STRETCH_TARGET = { op: ">=", bound: 0.85 } as const;
const QUEUE_TARGET = { op: "<=", bound: 0.05 } as const;

export interface IngestAtSize {
  /** The median round's measurements. */
  noop: LoadResult;
  ingest: LoadResult;
  ratio_to_ceiling: number;
  ratio_by_round: number[];
  queue_messages_per_event: number;
}

async function startIngestAlone(dir: string): Promise<Server & { logFile: string }> {
  const configs = writeDevConfigs(path.join(dir, "config"), { ...DEV_SETTINGS, ...PRODUCTION_LOGGING });
  const ingestConfig = configs.find((c) => c.endsWith("aigate-ingest.json"));
  if (!ingestConfig) throw new Error("ingest config missing");
  const front = path.join(dir, "config", "front.json");
  writeFileSync(
    front,
    JSON.stringify({
      name: "aigate-bench-front-ingest",
      main: path.join(BENCH, "noop/front.ts"),
      compatibility_date: "2026-04-20",
      services: [{ binding: "TARGET", service: "aigate-ingest" }],
    }),
  );
  const state = path.join(dir, "state");
  await prepareDatabase(ingestConfig, state, { ...process.env, WRANGLER_SEND_METRICS: "false" });
  const logFile = path.join(dir, "wrangler.log");
  const started = await startWrangler([front, ingestConfig], state, logFile);
  return { ...started, logFile };
}

export const ingest: Phase<"ingest", BySize<IngestAtSize>> = {
  key: "ingest",
  uses: ["noop"],
  async run(ctx) {
    const noop = await ctx.use("noop");
    const rounds = ctx.settings.ingest_rounds;
    ctx.log("starting ingest alone behind the same front worker");
    const alone = await startIngestAlone(ctx.dir);
    try {
      return await bySize(async (n) => {
        const measured: Array<{ noop: LoadResult; ingest: LoadResult; ratio: number }> = [];
        let accepted: LogLine[] = [];
        for (let round = 1; round <= rounds; round++) {
          ctx.log(`ingest alone at ${n} event(s)/request, round ${round}/${rounds}: no-op, then ingest`);
          const ceiling = await measureIngest(ctx.settings, noop.url, n, `noop${n}r${round}`);
          const from = logSize(alone.logFile);
          const ours = await measureIngest(ctx.settings, alone.url, n, `alone${n}r${round}`);
          accepted = accepted.concat(logLines(alone.logFile, from).filter((l) => l.msg === "request done"));
          measured.push({
            noop: ceiling,
            ingest: ours,
            ratio: ours.eventsPerSecond / ceiling.eventsPerSecond,
          });
        }
        const median = [...measured].sort((a, b) => a.ratio - b.ratio)[Math.floor(measured.length / 2)];
        if (!median) throw new Error("no ingest rounds measured");
        return {
          noop: median.noop,
          ingest: median.ingest,
          ratio_to_ceiling: median.ratio,
          ratio_by_round: measured.map((r) => r.ratio),
          queue_messages_per_event: queueMessagesPerEvent(accepted),
        };
      });
    } finally {
      await alone.stop();
    }
  },
  rows(r) {
    return REQUEST_SIZES.flatMap((n): Row[] => {
      const at = r[`${n}`];
      return [
        {
          label: `ingest ${n} ev/req: events/s (ingest alone vs no-op)`,
          value: fmt(at.ingest.eventsPerSecond),
          against: fmt(at.noop.eventsPerSecond),
        },
        {
          label: `ingest ${n} ev/req: ratio to ceiling`,
          value: fmt(at.ratio_to_ceiling),
          target: { ...RATIO_TARGET, value: at.ratio_to_ceiling },
        },
        ...(n === 50
          ? [
              {
                label: `ingest ${n} ev/req: ratio to ceiling (stretch)`,
                value: fmt(at.ratio_to_ceiling),
                target: { ...RATIO_STRETCH_TARGET, value: at.ratio_to_ceiling },
              },
            ]
          : []),
        {
          label: `ingest ${n} ev/req: p50 / p99 ms (ingest alone)`,
          value: `${fmt(at.ingest.p50Ms)} / ${fmt(at.ingest.p99Ms)}`,
          against: `no-op ${fmt(at.noop.p50Ms)} / ${fmt(at.noop.p99Ms)}`,
        },
        {
          label: `ingest ${n} ev/req: queue messages per event`,
          value: fmt(at.queue_messages_per_event, 3),
          ...(n === 50 ? { target: { ...QUEUE_TARGET, value: at.queue_messages_per_event } } : {}),
        },
      ];
    });
  },
};
