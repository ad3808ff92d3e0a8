import { env } from "cloudflare:test";
import { beforeEach, expect, it } from "vitest";
import {
  billableInD1,
  createPaidCustomer,
  judge,
  meterUsage,
  setupCatalog,
  usagePeriods,
  verdictMessage,
} from "./test/support";

/** The test-only producer onto aigate-verdicts, whose consumer is this worker (vitest.config.ts). */
function verdictsQueue(): Queue<unknown> {
  const queue: unknown = Reflect.get(env, "VERDICTS_TEST");
  if (typeof queue !== "object" || queue === null || !("sendBatch" in queue)) {
    throw new Error("VERDICTS_TEST producer binding missing: see vitest.config.ts");
  }
  return queue as Queue<unknown>;
}

beforeEach(async () => {
  await setupCatalog();
});

async function waitFor<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > until) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

it("bills usage messages delivered through the real local queue, duplicates and an old verdict included", async () => {
  const c = await createPaidCustomer({ plan: "pro" });
  const first = await judge(c.userId, [{}, {}, { billable: false }]);
  const second = await judge(c.userId, 2);
  await verdictsQueue().sendBatch(
    [first.message, second.message, first.message, verdictMessage(first.ids[0] ?? "", c.userId)].map(
      (body) => ({ body }),
    ),
  );
  await verdictsQueue().send(second.message);
  const periods = await waitFor(
    () => usagePeriods(c.userId),
    (rows) => rows[0]?.posted_total === 4,
  );
  expect(periods).toMatchObject([{ plan: "pro", billable_sessions: 4, posted_total: 4 }]);
  expect(await billableInD1(c.userId)).toBe(4);
  expect((await meterUsage(c.customerId, "pro", c.period)).value).toBe(4);
});
