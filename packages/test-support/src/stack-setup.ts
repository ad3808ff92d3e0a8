/**
 * A vitest global setup that starts the whole stack (emulator + all workers on the local
 * runtime) once for a suite, on free ports and a fresh database, exactly as `npm run dev` runs
 * it, and hands its addresses to the tests (see provided.d.ts).
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, ROOT, startStack } from "@aigate/scripts/dev/stack";
import type { TestProject } from "vitest/node";

export function stackSetup(suite: string) {
  return async function setup(project: TestProject) {
    const workDir = path.join(ROOT, "test/.artifacts", suite);
    mkdirSync(workDir, { recursive: true });
    const persistTo = mkdtempSync(path.join(os.tmpdir(), `aigate-${suite}-`));
    const stack = await startStack({
      port: await freePort(),
      stripePort: await freePort(),
      persistTo,
      workDir,
      settings: { VERDICT_SETTLE_SECONDS: "1", STRIPE_POST_INTERVAL_SECONDS: "1" },
      cronTickSeconds: 3,
    });
    project.provide("stackUrl", stack.url);
    project.provide("stripeUrl", stack.stripeUrl);
    project.provide("meterEventName", stack.catalog.meterEventName);
    project.provide("stackLogFile", stack.logFile ?? "");
    return async () => {
      await stack.close();
      rmSync(persistTo, { recursive: true, force: true });
    };
  };
}
