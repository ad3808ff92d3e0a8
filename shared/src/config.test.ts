import { describe, expect, it } from "vitest";
import { z } from "zod";
import { intVar, parseVars } from "./config";

const Vars = z.object({ WAIT_SECONDS: intVar(60, 0, 3600), NAME: z.string() });

describe("parseVars with intVar", () => {
  it("coerces integer text and falls back to the default when the var is unset or empty", () => {
    expect(parseVars(Vars, { WAIT_SECONDS: "2", NAME: "a" })).toEqual({ WAIT_SECONDS: 2, NAME: "a" });
    expect(parseVars(Vars, { NAME: "a" })).toEqual({ WAIT_SECONDS: 60, NAME: "a" });
    expect(parseVars(Vars, { WAIT_SECONDS: "", NAME: "a" })).toEqual({ WAIT_SECONDS: 60, NAME: "a" });
  });

  it("rejects fractions, text and values outside the bounds, naming the var", () => {
    for (const bad of ["1.5", "soon", "-1", "3601"]) {
      expect(() => parseVars(Vars, { WAIT_SECONDS: bad, NAME: "a" })).toThrow(
        /invalid worker settings: WAIT_SECONDS: invalid integer setting/,
      );
    }
  });

  it("names a missing secret", () => {
    expect(() => parseVars(Vars, {})).toThrow(/NAME/);
  });
});
