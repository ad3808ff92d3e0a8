import { describe, expect, it } from "vitest";
import { chunkBySize, jsonBytes } from "./chunks";

describe("chunkBySize", () => {
  it("keeps order and cuts at the item limit", () => {
    expect(chunkBySize([1, 2, 3, 4, 5], 2, 1000, () => 1)).toEqual([[1, 2], [3, 4], [5]]);
  });

  it("cuts before a chunk would exceed the byte limit", () => {
    expect(chunkBySize([4, 4, 4, 1], 100, 9, (n) => n)).toEqual([
      [4, 4],
      [4, 1],
    ]);
  });

  it("puts an item larger than the limit alone rather than dropping it", () => {
    expect(chunkBySize([1, 50, 1], 100, 10, (n) => n)).toEqual([[1], [50], [1]]);
  });

  it("returns no chunk for no items", () => {
    expect(chunkBySize([], 10, 10, () => 1)).toEqual([]);
  });
});

describe("jsonBytes", () => {
  it("counts UTF-8 bytes of the JSON", () => {
    expect(jsonBytes("é")).toBe(4);
    expect(jsonBytes({ a: 1 })).toBe(7);
  });
});
