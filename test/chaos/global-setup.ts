/**
 * Starts the chaos stack once: the control server, then the whole pipeline (emulator + every
 * worker on the local runtime) with each worker replaced by its chaos build. Webhooks are not
 * pushed: the suite drains them from the emulator and delivers them itself, duplicated and
 * reordered.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, ROOT, startStack } from "@aigate/scripts/dev/stack";
import type { TestProject } from "vitest/node";
import { chaosConfig, replayHint } from "./config";
import { startControl } from "./control";
import { writeChaosEntries } from "./entries";

export default async function setup(project: TestProject) {
  const config = chaosConfig();
  console.log(`chaos seed ${config.seed} on ${config.shards} D1 shards (replay: ${replayHint(config.seed)})`);
  // one directory per run, so that runs of several seeds (or a soak) can go side by side
  const workDir = path.join(ROOT, "test/.artifacts/chaos", `run-${config.seed}-${process.pid}`);
  mkdirSync(workDir, { recursive: true });
  const persistTo = mkdtempSync(path.join(os.tmpdir(), "aigate-chaos-"));
  const control = await startControl(config.seed);
  let stack: Awaited<ReturnType<typeof startStack>>;
  try {
    const stripePort = await freePort();
    stack = await startStack({
      port: await freePort(),
      stripePort,
      persistTo,
      workDir,
      webhooks: false,
      shards: config.shards,
      cronTickSeconds: config.cronTickSeconds,
      settings: { VERDICT_SETTLE_SECONDS: String(config.settleSeconds), STRIPE_POST_INTERVAL_SECONDS: "3" },
      mainOverrides: writeChaosEntries(
        path.join(workDir, "build"),
        control.url,
        `http://127.0.0.1:${stripePort}`,
      ),
    });
  } catch (err) {
    await control.close();
    throw err;
  }
  project.provide("stackUrl", stack.url);
  project.provide("stripeUrl", stack.stripeUrl);
  project.provide("paygMeter", stack.catalog.meters.payg.eventName);
  project.provide("proMeter", stack.catalog.meters.pro.eventName);
  project.provide("chaosControlUrl", control.url);
  project.provide("chaosPersistTo", persistTo);
  return async () => {
    await stack.close();
    await control.close();
    // the workers' source snapshot and configs go; the wrangler log stays for a failed run
    for (const dir of ["build", "config"]) rmSync(path.join(workDir, dir), { recursive: true, force: true });
    if (process.env.CHAOS_KEEP_STATE === "1") console.log(`chaos state kept in ${persistTo}`);
    else rmSync(persistTo, { recursive: true, force: true });
  };
}
