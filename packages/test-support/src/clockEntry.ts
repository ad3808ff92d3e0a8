/**
 * A test build of a worker whose clock follows the Stripe emulator's: before each request, batch
 * and cron run it reads the emulator's clock offset and moves `Date.now` by it. Moving the
 * emulator's clock (`POST /_emulator/clock`) then moves Stripe's time and the pipeline's time
 * together, so a test can end billing periods and see sessions land on the right side of them.
 * Production code is unchanged: this only wraps a worker's handlers (see stack-setup.ts).
 */
const realNow = Date.now.bind(Date);

async function followEmulator(stripeUrl: string): Promise<void> {
  const res = await fetch(`${stripeUrl}/_emulator/clock`);
  if (!res.ok) throw new Error(`emulator clock unavailable: ${res.status}`);
  const clock = (await res.json()) as { offset_seconds: number };
  const offsetMs = clock.offset_seconds * 1000;
  Date.now = () => realNow() + offsetMs;
}

export function withEmulatorClock<E>(
  worker: ExportedHandler<E, unknown>,
  stripeUrl: string,
): ExportedHandler<E, unknown> {
  const handler: ExportedHandler<E, unknown> = { ...worker };
  const { fetch: realFetch, queue, scheduled } = worker;
  if (realFetch) {
    handler.fetch = async (request, env, ctx) => {
      await followEmulator(stripeUrl);
      return realFetch(request, env, ctx);
    };
  }
  if (queue) {
    handler.queue = async (batch, env, ctx) => {
      await followEmulator(stripeUrl);
      return queue(batch, env, ctx);
    };
  }
  if (scheduled) {
    handler.scheduled = async (controller, env, ctx) => {
      await followEmulator(stripeUrl);
      return scheduled(controller, env, ctx);
    };
  }
  return handler;
}
