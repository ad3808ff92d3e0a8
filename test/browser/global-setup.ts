/**
 * The same stack as the end-to-end suites (so their helpers work here too), logs kept apart.
 * Without a browser (and not in CI) the suite is skipped with one line saying so, and no stack
 * is started; in CI the tests run and fail on the missing browser (chromium.ts).
 */

import { stackSetup } from "@aigate/test-support/stack";
import type { TestProject } from "vitest/node";
import { PLAN } from "./chromium";

export default async function setup(project: TestProject) {
  if (PLAN.kind === "skip") {
    console.warn(`\n*** ${PLAN.message} ***\n`);
    return;
  }
  if (PLAN.kind === "fail") return;
  return stackSetup("browser")(project);
}
