/**
 * Installing and testing print results, not warnings a newcomer cannot tell from failures.
 */
import { execFileSync, spawn } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./processes";

/** Lines every worker test run used to print although nothing was wrong. */
const NOISE = [
  "configLoader", // Vite: a config import without its file extension
  "Missing required secrets", // wrangler reading wrangler.jsonc without the test secrets
  '"secrets" fields are experimental',
  "WebSocket peer disconnected", // workerd, when a test file's runner disconnects
];

function vitest(dir: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const env: NodeJS.ProcessEnv = { FORCE_COLOR: "0", NO_COLOR: "1" };
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("VITEST") && !key.startsWith("WRANGLER_") && !(key in env)) env[key] = value;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(ROOT, "node_modules/.bin/vitest"), ["run", ...args], {
      cwd: dir,
      env,
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

describe("a worker's test run", () => {
  it("shows its results without the expected-but-alarming warnings", async () => {
    // as the workspace's `npm test` runs it (its config imports the test-support package's TypeScript)
    const run = await vitest(path.join(ROOT, "workers/biller"), [
      "--configLoader",
      "runner",
      "src/catalog.test.ts",
    ]);
    expect(run.code, run.output).toBe(0);
    expect(run.output).toMatch(/Tests\s+\d+ passed/);
    for (const line of NOISE) expect(run.output, line).not.toContain(line);
  });
});

describe("npm ci", () => {
  it("has every dependency's install script reviewed (allowScripts), so it warns about none", () => {
    const out = execFileSync("npm", ["install-scripts", "ls"], { cwd: ROOT, encoding: "utf8" });
    expect(out).toContain("No packages with unreviewed install scripts.");
  });
});
