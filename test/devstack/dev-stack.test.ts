/**
 * `npm run dev` as a person, a supervisor, an IDE or a test harness runs it: on the ports that
 * PORT and STRIPE_EMULATOR_PORT name (and the CLIs follow them), quiet about what is expected,
 * its dev-only query endpoint read-only for real, and stopped entirely, workerd included, by
 * SIGTERM, SIGINT or SIGHUP to npm, or by npm going away.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DevStack, hasProcess, kill, npmDone, startDev, stillRunning, waitStopped } from "./processes";

/** Lines `npm run dev` used to print on every start although nothing was wrong. */
const NOISE = [
  "Scheduled Workers are not automatically triggered",
  '"secrets" fields are experimental',
  "Missing required secrets",
  "Unable to fetch the `Request.cf` object",
  "[dev scheduler]",
];

/** Whatever a failed test left running is killed, and the stack's files removed. */
function stopAll(stack: DevStack | undefined) {
  if (!stack) return;
  kill(
    stillRunning(stack.processes).map((line) => Number(line.split(" ")[0])),
    "SIGKILL",
  );
  stack.cleanup();
}

describe("npm run dev, running", () => {
  let stack: DevStack;

  beforeAll(async () => {
    stack = await startDev();
  });

  afterAll(() => stopAll(stack));

  const url = (path: string) => `http://127.0.0.1:${stack.port}${path}`;
  const query = (body: string) => fetch(url("/__dev/query"), { method: "POST", body });
  const count = async (sql: string) => {
    const res = await query(JSON.stringify({ sql }));
    expect(res.status).toBe(200);
    return ((await res.json()) as { results: { n: number }[] }).results[0]?.n;
  };

  it("serves the stack on PORT and the Stripe emulator on STRIPE_EMULATOR_PORT", async () => {
    expect((await fetch(url("/healthz"))).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${stack.stripePort}/_emulator/health`)).status).toBe(200);
    expect(stack.output()).toContain(`AI Gate Billing is up on http://127.0.0.1:${stack.port}`);
  });

  it("starts without the warnings a newcomer cannot tell from failures", () => {
    for (const line of NOISE) expect(stack.output()).not.toContain(line);
  });

  it("npm run dlq finds the stack on PORT", async () => {
    const run = await npmDone(["run", "dlq", "--", "list"], { PORT: String(stack.port) });
    expect(run.code, run.output).toBe(0);
    expect(run.output).toContain("no dead letters");
  });

  it("npm run stripe:setup finds the emulator on STRIPE_EMULATOR_PORT", async () => {
    const run = await npmDone(["run", "stripe:setup"], { STRIPE_EMULATOR_PORT: String(stack.stripePort) });
    expect(run.code, run.output).toBe(0);
    expect(run.output).toContain(
      `Stripe catalog ready on the Stripe emulator at http://127.0.0.1:${stack.stripePort}`,
    );
  });

  describe("POST /__dev/query", () => {
    it("answers a SELECT, a semicolon inside a string included", async () => {
      const res = await query(JSON.stringify({ sql: "SELECT 'a;b' AS s, count(*) AS n FROM api_keys;" }));
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ results: [{ s: "a;b", n: 2 }] });
    });

    it("refuses a write hidden behind WITH, and nothing is written", async () => {
      const res = await query(
        JSON.stringify({
          sql: "WITH x AS (SELECT 1) INSERT INTO meter_locks (stripe_customer_id, holder, locked_until) SELECT 'cus_with', 'h', 0 FROM x",
        }),
      );
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("read_only");
      expect(await count("SELECT count(*) AS n FROM meter_locks WHERE stripe_customer_id = 'cus_with'")).toBe(
        0,
      );
    });

    it("refuses a SELECT followed by a second statement, and runs neither", async () => {
      for (const sql of [
        "SELECT 1; INSERT INTO meter_locks VALUES ('cus_multi', 'h', 0)",
        "SELECT '1'; DROP TABLE meter_locks; SELECT ';'",
        "SELECT 1 /* ; */ ; DELETE FROM api_keys",
      ]) {
        const res = await query(JSON.stringify({ sql }));
        expect(res.status, sql).toBe(400);
      }
      expect(
        await count("SELECT count(*) AS n FROM meter_locks WHERE stripe_customer_id = 'cus_multi'"),
      ).toBe(0);
      expect(await count("SELECT count(*) AS n FROM api_keys")).toBe(2);
    });

    it("answers malformed JSON and bad SQL with a 400 envelope and no internals", async () => {
      for (const [body, code] of [
        ['{"sql": "SELECT 1"', "invalid_json"],
        ["not json at all", "invalid_json"],
        ['{"query": "SELECT 1"}', "invalid_request"],
        ['{"sql": "SELECT * FROM no_such_table"}', "invalid_query"],
      ] as const) {
        const res = await query(body);
        const text = await res.text();
        expect(res.status, body).toBe(400);
        expect(JSON.parse(text).error.code, body).toBe(code);
        expect(text, body).not.toMatch(/\.ts\b|\.js\b|node_modules|\/work\/|\bat [\w.<]+ \(|stack/i);
      }
    });
  });

  it("stops everything, workerd included, and frees both ports when npm gets SIGTERM", async () => {
    expect(hasProcess(stack.processes, "workerd")).toBe(true);
    process.kill(stack.child.pid ?? 0, "SIGTERM");
    expect(await waitStopped(stack)).toEqual([]);
  });
});

describe("npm run dev stops everything it started", () => {
  const stacks: DevStack[] = [];

  afterAll(() => {
    for (const s of stacks) stopAll(s);
  });

  async function started(): Promise<DevStack> {
    const stack = await startDev();
    stacks.push(stack);
    expect(hasProcess(stack.processes, "workerd")).toBe(true);
    return stack;
  }

  for (const signal of ["SIGINT", "SIGHUP"] as const) {
    it(`on ${signal} to npm`, async () => {
      const stack = await started();
      process.kill(stack.child.pid ?? 0, signal);
      expect(await waitStopped(stack)).toEqual([]);
    });
  }

  it("when npm, its parent, goes away without a word (SIGKILL)", async () => {
    const stack = await started();
    process.kill(stack.child.pid ?? 0, "SIGKILL");
    expect(await waitStopped(stack)).toEqual([]);
  });
});
