/**
 * The stack's cron scheduler in a test stack: a failed run is kept in the stack's log, where the
 * suite's other runtime output is, and not printed among the test results (the chaos suite
 * crashes crons on purpose; a passing run must not look like a failing one).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, type Stack, startStack } from "@aigate/scripts/dev/stack";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ROOT, sleep } from "./processes";

describe("the scheduler of a test stack", () => {
  let stack: Stack;
  const persistTo = mkdtempSync(path.join(os.tmpdir(), "aigate-devstack-cron-"));
  const workDir = path.join(ROOT, "test/.artifacts/devstack-scheduler");
  const printed: string[] = [];

  beforeAll(async () => {
    vi.spyOn(console, "error").mockImplementation((...args: unknown[]) => {
      printed.push(args.map(String).join(" "));
    });
    stack = await startStack({
      port: await freePort(),
      stripePort: await freePort(),
      persistTo,
      workDir,
      cronTickSeconds: 1,
      mainOverrides: { biller: path.join(import.meta.dirname, "fixtures/failing-cron-biller.ts") },
    });
  });

  afterAll(async () => {
    await stack?.close();
    vi.restoreAllMocks();
    rmSync(persistTo, { recursive: true, force: true });
  });

  it("keeps a failed cron run in the stack's log, not on the console", async () => {
    const log = stack.logFile ?? "";
    const failure = '[dev scheduler] biller "* * * * *": biller scheduled (* * * * *) failed';
    for (let i = 0; i < 40 && !readFileSync(log, "utf8").includes(failure); i++) await sleep(250);
    expect(readFileSync(log, "utf8")).toContain(failure);
    expect(printed.filter((line) => line.includes("[dev scheduler]"))).toEqual([]);
  });
});
