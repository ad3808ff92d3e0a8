import { readFileSync } from "node:fs";
import path from "node:path";
import { repoRoot, workerTestConfig } from "@aigate/test-support/vitest";
import { parse } from "jsonc-parser";

/** Each queue consumer's max_retries, read from its worker's config (the dead-letter drain mirrors them). */
function consumerMaxRetries(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const worker of ["classifier", "biller"]) {
    const config: unknown = parse(
      readFileSync(path.join(repoRoot, "workers", worker, "wrangler.jsonc"), "utf8"),
    );
    const consumers: unknown = Reflect.get(Reflect.get(Object(config), "queues") ?? {}, "consumers");
    for (const c of Array.isArray(consumers) ? consumers : []) {
      const queue: unknown = Reflect.get(Object(c), "queue");
      const retries: unknown = Reflect.get(Object(c), "max_retries");
      if (typeof queue === "string" && typeof retries === "number") out[queue] = retries;
    }
  }
  return out;
}

/** This worker's cron triggers, read from its config (the scheduled handler dispatches on them). */
function ownCrons(): unknown {
  const config: unknown = parse(readFileSync(path.join(import.meta.dirname, "wrangler.jsonc"), "utf8"));
  return Reflect.get(Reflect.get(Object(config), "triggers") ?? {}, "crons");
}

export default workerTestConfig({
  dir: import.meta.dirname,
  bindings: {
    TEST_CONSUMER_MAX_RETRIES: JSON.stringify(consumerMaxRetries()),
    TEST_CRONS: JSON.stringify(ownCrons() ?? []),
  },
});
