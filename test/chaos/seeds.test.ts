/** The multi-seed runner's fixed seed list and how it reads a run's result. */
import { describe, expect, it } from "vitest";
import { DEFAULT_SEED } from "./config";
import { seedList, summarize } from "./seeds";

describe("chaos:seeds", () => {
  it("runs a fixed list of distinct seeds, never the CI seed", () => {
    const list = seedList(20);
    expect(list).toHaveLength(20);
    expect(new Set(list).size).toBe(20);
    expect(list).not.toContain(DEFAULT_SEED);
    expect(seedList(3)).toEqual(list.slice(0, 3));
  });

  it("adds up the mismatches of both summary lines, and says so when one is missing", () => {
    const out = [
      "\u001b[22mchaos: 418 sessions, 1428 duplicates, 25 crashes, 17 stripe faults, 0 mismatches",
      "chaos lifecycle: 900 sessions, 120 billing windows closed, 300 invoices, 2 mismatches",
    ].join("\n");
    expect(summarize(out).mismatches).toBe(2);
    expect(summarize(out.split("\n")[0] ?? "")).toMatchObject({ mismatches: null, lifecycle: null });
  });
});
