import { describe, expect, it } from "vitest";
import { createLogger } from "./log";
import {
  addOutcome,
  groupByShard,
  onEveryShard,
  SHARD_BUCKETS,
  settleEveryShard,
  shardBucket,
  shardCount,
  shardsOf,
  shardsOver,
} from "./shards";

const fakeDb = (name: string) => ({ name }) as unknown as D1Database;

describe("shards", () => {
  it("hashes a user id to a fixed bucket (FNV-1a over UTF-8, mod 256)", () => {
    // FNV-1a 32-bit of "" is the offset basis 0x811c9dc5; of "a" it is 0xe40c292c
    expect(shardBucket("")).toBe(0x811c9dc5 % SHARD_BUCKETS);
    expect(shardBucket("a")).toBe(0xe40c292c % SHARD_BUCKETS);
    // a non-ASCII id hashes its UTF-8 bytes, not its UTF-16 code units
    expect(shardBucket("é")).not.toBe(shardBucket("\u00e9".normalize("NFD")));
  });

  it("spreads users over four shards about evenly", () => {
    const shards = shardsOver(["a", "b", "c", "d"].map(fakeDb));
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++)
      counts[shards.indexOf(`user_${i}`)] = (counts[shards.indexOf(`user_${i}`)] ?? 0) + 1;
    for (const c of counts) expect(c).toBeGreaterThan(850);
  });

  it("keeps every user on shard 0 with one shard", () => {
    const only = fakeDb("only");
    const shards = shardsOver([only]);
    for (const u of ["a", "b", "user_42"]) expect(shards.of(u)).toBe(only);
  });

  it("reads the bindings DB, DB_1.. up to D1_SHARDS", () => {
    const env = { DB: fakeDb("0"), DB_1: fakeDb("1"), DB_2: fakeDb("2"), D1_SHARDS: "3" };
    const shards = shardsOf(env);
    expect(shards.all).toEqual([env.DB, env.DB_1, env.DB_2]);
    expect(shards.home).toBe(env.DB);
    expect(shardsOf({ DB: env.DB }).all).toEqual([env.DB]);
  });

  it("rejects a shard count without its bindings, or out of range", () => {
    expect(() => shardsOf({ DB: fakeDb("0"), D1_SHARDS: "2" })).toThrow(/DB_1: D1_SHARDS is 2/);
    expect(() => shardCount({ D1_SHARDS: "0" })).toThrow(/D1_SHARDS/);
    expect(() => shardCount({ D1_SHARDS: "1.5" })).toThrow(/D1_SHARDS/);
    expect(shardCount({ D1_SHARDS: "" })).toBe(1);
  });

  it("groups items by their user's shard, keeping their order", () => {
    const shards = shardsOver(["a", "b", "c", "d"].map(fakeDb));
    const users = Array.from({ length: 40 }, (_, i) => `u${i}`);
    const groups = groupByShard(shards, users, (u) => u);
    expect(groups.flatMap((g) => g.items).sort()).toEqual([...users].sort());
    for (const g of groups) {
      expect(g.db).toBe(shards.all[g.index]);
      for (const u of g.items) expect(shards.indexOf(u)).toBe(g.index);
      expect(g.items).toEqual(users.filter((u) => shards.indexOf(u) === g.index));
    }
  });

  it("runs cross-user work on every shard, going on past a shard that fails", async () => {
    const shards = shardsOver(["a", "b", "c"].map(fakeDb));
    const seen: number[] = [];
    const settled = await settleEveryShard(shards, createLogger("test"), "a run", async (db, _log, index) => {
      seen.push(index);
      expect(db).toBe(shards.all[index]);
      if (index === 1) throw new Error("shard 1 is down");
      return index * 10;
    });
    expect(seen).toEqual([0, 1, 2]);
    expect(settled.results).toEqual([0, 20]);
    expect(settled.failure?.error).toEqual(new Error("shard 1 is down"));
    await expect(
      onEveryShard(shards, createLogger("test"), "a run", async (_db, _log, index) => {
        if (index === 2) throw new Error("shard 2 is down");
        return index;
      }),
    ).rejects.toThrow("shard 2 is down");
    expect(await onEveryShard(shards, createLogger("test"), "a run", async (_db, _log, i) => i)).toEqual([
      0, 1, 2,
    ]);
  });

  it("throws a one-shard run's error at once, as an unsharded deployment does", async () => {
    const shards = shardsOver([fakeDb("only")]);
    await expect(
      settleEveryShard(shards, createLogger("test"), "a run", async () => {
        throw new Error("down");
      }),
    ).rejects.toThrow("down");
  });

  it("adds up per-shard outcomes: counts summed, flags or-ed", () => {
    const total = { judged: 0, rows: 0, more: false };
    addOutcome(total, { judged: 2, rows: 1, more: false });
    addOutcome(total, { judged: 3, rows: 0, more: true });
    addOutcome(total, { judged: 1, rows: 4, more: false });
    expect(total).toEqual({ judged: 6, rows: 5, more: true });
  });
});
