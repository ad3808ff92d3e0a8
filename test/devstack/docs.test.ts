/**
 * The repository's documentation stands alone: every Markdown file it names is in the
 * repository, and the emulator's README lists every page and control the emulator serves.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./processes";

const tracked = execFileSync("git", ["ls-files"], { cwd: ROOT, encoding: "utf8" })
  .split("\n")
  .filter((f) => f !== "" && f !== "package-lock.json");
const TEXT = /\.(md|ts|mjs|js|json|jsonc|sql|toml|ya?ml|html|css|sh)$|(^|\/)run$/;

describe("the documentation", () => {
  it("names only Markdown files that are in the repository", () => {
    const present = new Set(tracked.filter((f) => f.endsWith(".md")).map((f) => path.basename(f)));
    const outside: string[] = [];
    for (const file of tracked.filter((f) => TEXT.test(f))) {
      const text = readFileSync(path.join(ROOT, file), "utf8");
      for (const m of text.matchAll(/[\w./-]*\b[\w-]+\.md\b/g)) {
        const name = m[0];
        const absolute = name.startsWith("/");
        if (absolute || !present.has(path.basename(name))) outside.push(`${file}: ${name}`);
      }
    }
    expect(outside).toEqual([]);
  });

  it("of the Stripe emulator lists every hosted page and control route it serves", () => {
    const dir = path.join(ROOT, "packages/stripe-emulator");
    const readme = readFileSync(path.join(dir, "README.md"), "utf8");
    const routes = tracked
      .filter((f) => f.startsWith("packages/stripe-emulator/src/routes/") && f.endsWith(".ts"))
      .flatMap((f) => [
        ...readFileSync(path.join(ROOT, f), "utf8").matchAll(/app\.(get|post|delete)\("(\/[^"]*)"/g),
      ])
      .map(([, method, route]) => `${method?.toUpperCase()} ${route?.replace(/:(\w+)/g, "{$1}")}`)
      // the Stripe API itself (/v1) is described by resource, not by path
      .filter((r) => !r.includes(" /v1"));
    expect(routes).toContain("POST /checkout/{id}/pay");
    const missing = routes.filter((r) => {
      const [method, route] = r.split(" ");
      return !readme.includes(`${method} ${route}`) && !readme.includes(`\`${route}\``);
    });
    expect(missing).toEqual([]);
  });
});
