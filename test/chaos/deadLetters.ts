/**
 * Reading `GET /admin/dead-letters` as an operator tool must: every page, following `next_cursor`
 * until it is null. A run parks hundreds of letters (the `user_mismatch` events of 3 % of the
 * sessions), so the first page alone says nothing about whether a given letter is there.
 */
import { isRecord } from "./clients";

export type AdminGet = (path: string) => Promise<{ status: number; body: unknown }>;

export interface ListedDeadLetter {
  id: string;
  queue: string;
  error: string;
  replay_count: number;
}

/** Every dead letter the admin API lists for `queue`, all pages; throws on an error or a cursor loop. */
export async function listAllDeadLetters(
  get: AdminGet,
  queue: string,
  pageSize = 100,
): Promise<{ letters: ListedDeadLetter[]; pages: number }> {
  const letters: ListedDeadLetter[] = [];
  const cursors = new Set<string>();
  let cursor: string | null = null;
  for (let pages = 1; ; pages++) {
    const query = `queue=${encodeURIComponent(queue)}&limit=${pageSize}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const res = await get(`/admin/dead-letters?${query}`);
    const body = res.body;
    if (res.status !== 200 || !isRecord(body) || !Array.isArray(body.dead_letters)) {
      throw new Error(
        `GET /admin/dead-letters (page ${pages}): ${res.status} ${JSON.stringify(body).slice(0, 300)}`,
      );
    }
    if (body.dead_letters.length > pageSize) {
      throw new Error(
        `GET /admin/dead-letters returned ${body.dead_letters.length} letters for limit ${pageSize}`,
      );
    }
    for (const d of body.dead_letters) {
      if (!isRecord(d) || typeof d.id !== "string")
        throw new Error(`unreadable dead letter ${JSON.stringify(d)}`);
      letters.push({
        id: d.id,
        queue: String(d.queue),
        error: String(d.error),
        replay_count: Number(d.replay_count),
      });
    }
    const next = body.next_cursor;
    if (next === null || next === undefined) return { letters, pages };
    if (typeof next !== "string" || cursors.has(next)) {
      throw new Error(`GET /admin/dead-letters: cursor ${JSON.stringify(next)} repeats or is not a string`);
    }
    cursors.add(next);
    cursor = next;
  }
}
