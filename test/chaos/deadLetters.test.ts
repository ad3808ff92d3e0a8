/**
 * The poison check reads every page of GET /admin/dead-letters: with hundreds of user_mismatch
 * letters (a 10,000-session soak) the poison is far past the first page.
 */
import { describe, expect, it } from "vitest";
import { type AdminGet, listAllDeadLetters } from "./deadLetters";

/** The admin API's paging as documented: newest first, `limit`, an opaque `next_cursor` (null at the end). */
function fakeAdmin(ids: string[], opts: { loop?: boolean } = {}): { get: AdminGet; calls: string[] } {
  const calls: string[] = [];
  const get: AdminGet = async (path) => {
    calls.push(path);
    const url = new URL(path, "http://admin.test");
    const limit = Number(url.searchParams.get("limit") ?? 50);
    const cursor = url.searchParams.get("cursor");
    const from = cursor === null ? 0 : Number(Buffer.from(cursor, "base64url").toString());
    const page = ids.slice(from, from + limit);
    const more = from + limit < ids.length;
    const next = opts.loop ? 0 : from + limit;
    return {
      status: 200,
      body: {
        dead_letters: page.map((id) => ({ id, queue: "aigate-telemetry", error: "x", replay_count: 0 })),
        next_cursor: more ? Buffer.from(String(next)).toString("base64url") : null,
      },
    };
  };
  return { get, calls };
}

const letters = (n: number) => [
  ...Array.from({ length: n }, (_, i) => `aigate-telemetry:m${i}:user_mismatch:s${i}`),
  "aigate-telemetry:poison-1",
  "aigate-telemetry:poison-2",
];

describe("listing every dead letter", () => {
  it("follows next_cursor to the last page: 302 letters in pages of 100", async () => {
    const ids = letters(300);
    const { get, calls } = fakeAdmin(ids);
    const { letters: listed, pages } = await listAllDeadLetters(get, "aigate-telemetry");
    expect(pages).toBe(4);
    expect(calls).toHaveLength(4);
    expect(listed.map((d) => d.id)).toEqual(ids);
    expect(listed.map((d) => d.id)).toContain("aigate-telemetry:poison-2");
  });

  it("reads a single page when everything fits", async () => {
    const { get, calls } = fakeAdmin(letters(5));
    const { letters: listed, pages } = await listAllDeadLetters(get, "aigate-telemetry", 10);
    expect([pages, calls.length, listed.length]).toEqual([1, 1, 7]);
    expect(calls[0]).toBe("/admin/dead-letters?queue=aigate-telemetry&limit=10");
  });

  it("stops on a cursor that repeats instead of looping", async () => {
    const { get } = fakeAdmin(letters(30), { loop: true });
    await expect(listAllDeadLetters(get, "aigate-telemetry", 10)).rejects.toThrow(/cursor .* repeats/);
  });

  it("fails on an answer that is not a list", async () => {
    const get: AdminGet = async () => ({ status: 500, body: { error: { code: "internal" } } });
    await expect(listAllDeadLetters(get, "aigate-telemetry")).rejects.toThrow(/page 1\): 500/);
  });
});
