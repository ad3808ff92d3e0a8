/**
 * The browser suite on a machine without Chromium: skipped with one loud line saying why and how
 * to enable it, never a failure that hides the other suites; under CI=true, a failure.
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { browserPlan, findChromium } from "../browser/chromium";
import { ROOT } from "./processes";

const MISSING = "/nonexistent/chromium";

/** `vitest run --project browser` in test/, as `npm test` runs it, with `env` added. */
function browserSuite(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const base: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    // this run's own vitest settings stay out of the nested run
    if (!key.startsWith("VITEST") && key !== "CI" && key !== "CHROMIUM_PATH") base[key] = value;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(ROOT, "node_modules/.bin/vitest"), ["run", "--project", "browser"], {
      cwd: path.join(ROOT, "test"),
      env: { ...base, ...env, FORCE_COLOR: "0", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, output }));
  });
}

describe("the browser suite without Chromium", () => {
  it("is skipped, with one line saying why and how to enable it, and passes", async () => {
    const run = await browserSuite({ CHROMIUM_PATH: MISSING });
    expect(run.code, run.output).toBe(0);
    const lines = run.output.split("\n").filter((l) => l.includes("BROWSER TESTS SKIPPED"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`no Chromium (CHROMIUM_PATH=${MISSING} is not an executable)`);
    expect(lines[0]).toContain("sudo apt-get install chromium");
    expect(run.output).toMatch(/Tests\s+\d+ skipped/);
  });

  it("fails under CI=true, saying the browser is missing", async () => {
    const run = await browserSuite({ CHROMIUM_PATH: MISSING, CI: "true" });
    expect(run.code, run.output).not.toBe(0);
    expect(run.output).toContain(
      `browser tests: no Chromium (CHROMIUM_PATH=${MISSING} is not an executable)`,
    );
    expect(run.output).not.toContain("BROWSER TESTS SKIPPED");
  });
});

describe("finding Chromium", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "aigate-chromium-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("takes chromium or chromium-browser from PATH, and CHROMIUM_PATH over both", () => {
    const browser = path.join(dir, "chromium-browser");
    writeFileSync(browser, "#!/bin/sh\n");
    chmodSync(browser, 0o755);
    expect(findChromium({ PATH: `/nonexistent${path.delimiter}${dir}` })).toBe(browser);
    expect(findChromium({ PATH: dir, CHROMIUM_PATH: MISSING })).toBeNull();
    expect(findChromium({ PATH: "", CHROMIUM_PATH: browser })).toBe(browser);
    expect(findChromium({ PATH: "" })).toBeNull();
  });

  it("skips without a browser outside CI and fails without one in CI", () => {
    expect(browserPlan({ PATH: "" }).kind).toBe("skip");
    expect(browserPlan({ PATH: "", CI: "false" }).kind).toBe("skip");
    expect(browserPlan({ PATH: "", CI: "true" }).kind).toBe("fail");
    expect(browserPlan({ PATH: "", CI: "1" }).kind).toBe("fail");
  });
});
