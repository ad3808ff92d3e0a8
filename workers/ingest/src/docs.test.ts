/**
 * docs/api-gateway.md cannot rot: every curl example in it is replayed against the worker, in
 * order, on a fresh database with the dev keys, and must get the status and body shown right
 * after it. Every JSON block must parse, and event examples must pass validation.
 */
import { LIMITS, parseEventBatch } from "@aigate/shared";
import { beforeEach, describe, expect, it } from "vitest";
import doc from "../../../docs/api-gateway.md?raw";
import { harness, seedDevKeys } from "./test/support";

beforeEach(seedDevKeys);

interface Block {
  lang: string;
  text: string;
}

function fencedBlocks(markdown: string): Block[] {
  return [...markdown.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({
    lang: m[1] ?? "",
    text: m[2] ?? "",
  }));
}

/** Shell words of a command line: single and double quotes, backslash-newline continuations. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) words.push(m[1] ?? m[2]?.replace(/\\(.)/g, "$1") ?? m[3] ?? "");
  return words;
}

interface CurlRequest {
  url: string;
  init: RequestInit & { headers: Record<string, string> };
}

const NOW_EXPANSION = "$(date -u +%FT%TZ)";

/** The request a documented `curl` command sends (the subset of curl the doc uses). */
function parseCurl(script: string, now: number): CurlRequest {
  const [commandPart, ...heredoc] = script.split(/<<EOF\n/);
  const command = (commandPart ?? "").replace(/\\\n/g, " ");
  const words = shellWords(command);
  expect(words[0]).toBe("curl");
  const headers: Record<string, string> = {};
  let url = "";
  let body: string | undefined;
  let method = "GET";
  for (let i = 1; i < words.length; i++) {
    const w = words[i] ?? "";
    if (w === "-H") {
      const [name, ...value] = (words[++i] ?? "").split(":");
      headers[(name ?? "").trim().toLowerCase()] = value.join(":").trim();
    } else if (w === "-d" || w === "--data-binary") {
      const data = words[++i] ?? "";
      body =
        data === "@-"
          ? heredoc
              .join("")
              .replace(/^EOF\n?$/m, "")
              .replace(/\nEOF\n?$/, "\n")
          : data;
      method = "POST";
    } else if (w === "-X") {
      method = words[++i] ?? method;
    } else if (w.startsWith("http")) {
      url = w;
    } else if (!["-sS", "-i", "-s", "-S"].includes(w)) {
      throw new Error(`curl option not understood by this test: ${w}`);
    }
  }
  // the doc's only shell expansion: the current time, as date(1) prints it (whole seconds, Z),
  // in bodies and in binary-mode headers (ce-time)
  const expand = (text: string) => {
    const expanded = text.replaceAll(NOW_EXPANSION, `${new Date(now).toISOString().slice(0, 19)}Z`);
    if (expanded.includes("$(")) throw new Error("unexpected shell expansion in an example");
    return expanded;
  };
  if (body !== undefined) body = expand(body);
  for (const [name, value] of Object.entries(headers)) headers[name] = expand(value);
  return { url, init: { method, headers, ...(body !== undefined ? { body } : {}) } };
}

function parseHttpResponse(text: string): { status: number; body: unknown } {
  const [head = "", ...rest] = text.split(/\n\n/);
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
  if (!status?.[1]) throw new Error(`not a status line: ${head}`);
  return { status: Number(status[1]), body: JSON.parse(rest.join("\n\n")) };
}

const blocks = fencedBlocks(doc);

describe("docs/api-gateway.md", () => {
  it("has curl examples for both endpoints, each followed by its response", () => {
    const curls = blocks.filter((b) => b.lang === "sh" && b.text.startsWith("curl"));
    expect(curls.length).toBeGreaterThanOrEqual(8);
    expect(curls.some((b) => b.text.includes("/v1/events"))).toBe(true);
    expect(curls.some((b) => b.text.includes("/v1/sessions/admit"))).toBe(true);
    for (const c of curls) expect(blocks[blocks.indexOf(c) + 1]?.lang).toBe("http");
  });

  it("gets exactly the documented status and body for every curl example, in order", async () => {
    const now = Date.now();
    const h = harness({ now: () => now });
    let replayed = 0;
    for (const [i, block] of blocks.entries()) {
      if (block.lang !== "sh" || !block.text.startsWith("curl")) continue;
      const request = parseCurl(block.text, now);
      const url = new URL(request.url);
      expect(url.origin).toBe("http://127.0.0.1:8787");
      const expected = parseHttpResponse(blocks[i + 1]?.text ?? "");
      const res = await h.fetch(url.pathname, request.init);
      expect({ example: block.text, status: res.status, body: await res.json() }).toEqual({
        example: block.text,
        ...expected,
      });
      replayed += 1;
    }
    expect(replayed).toBeGreaterThanOrEqual(8);
    // the event examples that succeeded really reached the queue
    expect(h.rec.batches.flat().length).toBeGreaterThanOrEqual(2);
  });

  it("has only valid JSON blocks, and its event examples pass validation", () => {
    const json = blocks.filter((b) => b.lang === "json");
    expect(json.length).toBeGreaterThanOrEqual(3);
    for (const b of json) {
      const value: unknown = JSON.parse(b.text);
      if (Array.isArray(value)) {
        const parsed = parseEventBatch(value, Date.parse("2026-11-20T12:01:00Z"));
        expect(parsed.ok).toBe(true);
      }
    }
  });

  it("states the limits the code enforces", () => {
    expect(doc).toContain(`at most **${LIMITS.maxEventsPerRequest} events**`);
    expect(doc).toContain(`${LIMITS.maxBodyBytes.toLocaleString("en-US")} bytes`);
    expect(doc).toContain("within 60 seconds");
  });
});
