/**
 * Ingest inside the running pipeline: the classifier, the biller and the local queue broker busy
 * on the same cores (in production the consumers do not share the ingest isolate's CPU). Then
 * waits until the pipeline has judged every session this load ended, so the next phase starts
 * from a drained pipeline.
 */

import type { Phase } from "../lib/phase";
import { measureIngest, until } from "../lib/processes";
import { fmt } from "../lib/report";
import type { LoadResult } from "../load";
import { type BySize, bySize, REQUEST_SIZES } from "./ingest";

export interface IngestInPipelineAtSize {
  noop: LoadResult;
  ingest: LoadResult;
  ratio_to_ceiling: number;
}

export const ingestInPipeline: Phase<"ingest_in_pipeline", BySize<IngestInPipelineAtSize>> = {
  key: "ingest_in_pipeline",
  uses: ["noop", "stack"],
  async run(ctx) {
    const noop = await ctx.use("noop");
    const stack = await ctx.use("stack");
    const result = await bySize(async (n) => {
      ctx.log(`ingest in the running pipeline at ${n} event(s)/request`);
      const ceiling = await measureIngest(ctx.settings, noop.url, n, `noopp${n}`);
      const ours = await measureIngest(ctx.settings, stack.url, n, `in${n}`);
      return {
        noop: ceiling,
        ingest: ours,
        ratio_to_ceiling: ours.eventsPerSecond / ceiling.eventsPerSecond,
      };
    });
    ctx.log("waiting for the pipeline to drain the ingest phase");
    await until(
      () =>
        stack.query<{ n: number }>(
          "SELECT count(*) AS n FROM sessions WHERE verdict_at IS NULL AND ended_at IS NOT NULL",
        ),
      (r) => (r[0]?.n ?? 1) === 0,
      600_000,
      "drain",
    );
    return result;
  },
  rows(r) {
    return REQUEST_SIZES.map((n) => ({
      label: `ingest ${n} ev/req: in the running pipeline, ratio`,
      value: fmt(r[`${n}`].ratio_to_ceiling),
      against: `${fmt(r[`${n}`].ingest.eventsPerSecond)} vs no-op ${fmt(r[`${n}`].noop.eventsPerSecond)} events/s`,
    }));
  },
};
