/**
 * The minute cron: finds sessions due for a verdict whose reminder never came (lost, or never
 * sent after a crash) and stale sessions (no `ended`, no telemetry for STALE_SESSION_MINUTES),
 * and hands them to the queue consumer as JudgeMessages. Judging there, not here, keeps judging
 * retryable with backoff; usage recorded by a run that crashed before telling the biller reaches it
 * through its series rows (the biller's minute sweep posts them).
 */
import { chunkBySize, createLogger, type JudgeMessage } from "@aigate/shared";
import { readConfig } from "./config";
import { readDueSessionIds } from "./queries";
import { sendAll } from "./send";

/** Sessions handed over per cron run (the rest wait a minute). */
export const SWEEP_LIMIT = 2000;
const IDS_PER_MESSAGE = 100;

export async function sweepDueSessions(env: Env, now: number, limit = SWEEP_LIMIT): Promise<{ due: number }> {
  const log = createLogger("classifier", { cron: "sweep" });
  const { staleMs } = readConfig(env);
  const ids = await readDueSessionIds(env.DB, now, now - staleMs, limit);
  const messages: JudgeMessage[] = chunkBySize(ids, IDS_PER_MESSAGE, Number.MAX_SAFE_INTEGER, () => 1).map(
    (session_ids) => ({ v: 1, kind: "judge", session_ids, due_at: now }),
  );
  await sendAll(env.TELEMETRY, messages);
  if (ids.length > 0)
    log.info("handed due sessions to the judge", { due: ids.length, messages: messages.length });
  return { due: ids.length };
}
