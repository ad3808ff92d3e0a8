/**
 * The ingest endpoints over real HTTP on the local runtime, as clients really behave: the
 * official CloudEvents SDK in its three modes, keep-alive connections reused after a refused
 * upload, uploads cut off mid-body and framing the runtime may pass on.
 */
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { DEV_INGEST_KEY } from "@aigate/test-support";
import { CloudEvent, emitterFor, httpTransport, Mode } from "cloudevents";
import { describe, expect, inject, it } from "vitest";
import { isRecord, StackClient } from "../chaos/clients";
import { runCase } from "../chaos/corpus";
import { INGEST_HARDENING_CORPUS } from "../chaos/corpus-ingest-hardening";
import { eventually, queryD1, shardOf, stackUrl, stripeUrl } from "./helpers";

const MiB = 1024 * 1024;
const auth = { authorization: `Bearer ${DEV_INGEST_KEY}` };

function heartbeat(id: string, subject: string, user: string): CloudEvent<Record<string, unknown>> {
  return new CloudEvent({
    specversion: "1.0",
    id,
    source: "gw-e2e-sdk",
    type: "aigate.session.heartbeat",
    subject,
    time: new Date().toISOString(),
    data: { user_id: user, project_id: "proj-sdk", audio_ms: 4000 },
  });
}

/** The JSON body of what the SDK's HTTP transport resolved with (`{headers, body}`). */
function answerOf(response: unknown): unknown {
  if (!isRecord(response) || typeof response.body !== "string") {
    throw new Error(`not an HTTP transport response: ${JSON.stringify(response)}`);
  }
  return JSON.parse(response.body);
}

async function sessionsOf(user: string): Promise<string[]> {
  const rows = await queryD1<{ session_id: string }>(
    `SELECT session_id FROM sessions WHERE user_id = '${user}' ORDER BY 1`,
    shardOf(user),
  );
  return rows.map((r) => r.session_id);
}

interface Answer {
  status: number;
  body: string;
  reusedSocket: boolean;
}

/** One keep-alive connection (at most one socket), as a gateway's HTTP client pool of one. */
function keepAliveClient() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const url = new URL(stackUrl());
  const post = (path: string, headers: Record<string, string>, body: string | string[]) =>
    new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        { host: url.hostname, port: url.port, path, method: "POST", agent, headers },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => {
            text += d;
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body: text, reusedSocket: req.reusedSocket }),
          );
        },
      );
      req.on("error", reject);
      // an array is sent chunked (no Content-Length), one write per element
      if (Array.isArray(body)) for (const part of body) req.write(part);
      else req.write(body);
      req.end();
    });
  return { post, close: () => agent.destroy() };
}

function batchOf(id: string): string {
  return JSON.stringify([heartbeat(id, `sess-${id}`, "keepalive-user")]);
}

/** The log lines every worker wrote since byte `offset` (JSON objects, wherever they sit on the line). */
function logLinesSince(offset: number): Array<Record<string, unknown>> {
  // `offset` counts bytes (statSync), and the log holds multi-byte characters
  const text = readFileSync(inject("stackLogFile")).subarray(offset).toString("utf8");
  const lines: Array<Record<string, unknown>> = [];
  for (const line of text.split("\n")) {
    const start = line.indexOf("{");
    const end = line.lastIndexOf("}");
    if (start < 0 || end < start) continue;
    try {
      lines.push(JSON.parse(line.slice(start, end + 1)) as Record<string, unknown>);
    } catch {
      // not a structured line (wrangler's own output)
    }
  }
  return lines;
}

/** Sends raw bytes on a fresh connection, then closes it (abruptly unless `halfClose`); the answer, if any. */
function rawExchange(request: string, opts: { closeAfterMs: number; halfClose?: boolean }): Promise<string> {
  const url = new URL(stackUrl());
  return new Promise((resolve) => {
    let answer = "";
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(request);
      setTimeout(() => (opts.halfClose ? socket.end() : socket.destroy()), opts.closeAfterMs);
    });
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      answer += d;
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(answer));
  });
}

describe("the CloudEvents SDK against POST /v1/events", () => {
  const user = `sdk-${crypto.randomUUID()}`;
  const transport = httpTransport(stackUrl("/v1/events"));

  it("is accepted in binary mode (the SDK's default), structured mode and as a batch", async () => {
    const binary = await emitterFor(transport)(heartbeat("sdk-bin", "sess-sdk-bin", user), { headers: auth });
    expect(answerOf(binary)).toEqual({ accepted: 1 });

    const structured = await emitterFor(transport, { mode: Mode.STRUCTURED })(
      heartbeat("sdk-str", "sess-sdk-str", user),
      { headers: auth },
    );
    expect(answerOf(structured)).toEqual({ accepted: 1 });

    // The SDK has no batch serializer; a batch is its events' JSON form, sent by its transport.
    const batch = await transport(
      {
        headers: { "content-type": "application/cloudevents-batch+json; charset=utf-8" },
        body: JSON.stringify([
          heartbeat("sdk-b1", "sess-sdk-b1", user),
          heartbeat("sdk-b2", "sess-sdk-b2", user),
        ]),
      },
      { headers: auth },
    );
    expect(answerOf(batch)).toEqual({ accepted: 2 });

    // every event reached the pipeline, whatever its mode
    await eventually(
      () => sessionsOf(user),
      (s) => s.length === 4,
    );
    expect(await sessionsOf(user)).toEqual(["sess-sdk-b1", "sess-sdk-b2", "sess-sdk-bin", "sess-sdk-str"]);
  });

  it("gets the same validation in binary mode, with details naming the ce-* header", async () => {
    const event = heartbeat("sdk-bad", "sess-sdk-bad", user).cloneWith({
      type: "aigate.session.paused",
      data: { project_id: "proj-sdk", audio_ms: 1 },
    });
    const res = await emitterFor(transport)(event, { headers: auth });
    expect(answerOf(res)).toEqual({
      error: {
        code: "invalid_event",
        message: "1 problem(s) in the events; nothing was accepted",
        details: [{ index: 0, path: "ce-type", message: expect.any(String) }],
      },
    });
  });
});

describe("a keep-alive connection after a refused upload", () => {
  it("serves the next request after a 2 MiB body with Content-Length was refused with 413", async () => {
    const client = keepAliveClient();
    try {
      const big = `[${JSON.stringify(heartbeat("ka-big", "sess-ka", "keepalive-user"))}${" ".repeat(2 * MiB)}]`;
      const headers = { ...auth, "content-type": "application/cloudevents-batch+json" };
      const refused = await client.post("/v1/events", headers, big);
      expect(refused.status).toBe(413);
      expect(JSON.parse(refused.body).error.code).toBe("payload_too_large");

      const next = await client.post("/v1/events", headers, batchOf(`ka-cl-${Date.now()}`));
      expect({ status: next.status, body: next.body, reusedSocket: next.reusedSocket }).toEqual({
        status: 202,
        body: '{"accepted":1}',
        reusedSocket: true,
      });
    } finally {
      client.close();
    }
  });

  it("serves the next request after a 2 MiB chunked body was refused with 413", async () => {
    const client = keepAliveClient();
    try {
      const headers = { ...auth, "content-type": "application/cloudevents-batch+json" };
      const chunks = ['["', ...Array.from({ length: 32 }, () => "x".repeat(64 * 1024)), '"]'];
      const refused = await client.post("/v1/events", headers, chunks);
      expect(refused.status).toBe(413);

      const next = await client.post("/v1/events", headers, batchOf(`ka-ch-${Date.now()}`));
      expect([next.status, next.reusedSocket]).toEqual([202, true]);
    } finally {
      client.close();
    }
  });

  it("serves the next admission after a chunked admission body over 16 KiB was refused", async () => {
    const client = keepAliveClient();
    try {
      const headers = { ...auth, "content-type": "application/json" };
      const refused = await client.post("/v1/sessions/admit", headers, Array(8).fill("x".repeat(16 * 1024)));
      expect(refused.status).toBe(413);
      const body = JSON.stringify({
        session_id: `ka-admit-${Date.now()}`,
        user_id: "ka-user",
        project_id: "p",
      });
      const next = await client.post("/v1/sessions/admit", headers, body);
      expect([next.status, next.reusedSocket]).toEqual([200, true]);
    } finally {
      client.close();
    }
  });
});

describe("uploads cut off and odd framing", () => {
  const head = (framing: string) =>
    `POST /v1/events HTTP/1.1\r\nHost: ${new URL(stackUrl()).host}\r\nAuthorization: Bearer ${DEV_INGEST_KEY}\r\n` +
    `Content-Type: application/json\r\n${framing}\r\n`;

  /**
   * The ingest worker's log lines about a cut-off request sent after `offset`: waits for its
   * outcome (an error, or a rejection with one of `codes`) and then for its "request done" line
   * (lines of earlier requests may still be arriving in the log).
   */
  async function outcomeLines(offset: number, codes: string[]) {
    const ingestLines = async () => logLinesSince(offset).filter((l) => l.worker === "ingest");
    const outcome = (l: Record<string, unknown>) =>
      l.level === "error" || (l.msg === "request rejected" && codes.includes(String(l.code)));
    const lines = await eventually(ingestLines, (ls) => ls.some(outcome), 10_000);
    const requestId = lines.find(outcome)?.request_id;
    const all = await eventually(
      ingestLines,
      (ls) => ls.some((l) => l.msg === "request done" && l.request_id === requestId),
      10_000,
    );
    return all.filter((l) => l.request_id === requestId);
  }

  it("logs a body cut off mid-upload as a rejected request (400 incomplete_body), not as an error", async () => {
    const offset = statSync(inject("stackLogFile")).size;
    const partial = batchOf("cut").slice(0, 40);
    await rawExchange(`${head("Content-Length: 4096\r\n")}${partial}`, { closeAfterMs: 300 });
    const lines = await outcomeLines(offset, ["incomplete_body"]);
    expect(lines.filter((l) => l.level === "error")).toEqual([]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: "info",
        msg: "request rejected",
        code: "incomplete_body",
        status: 400,
      }),
    );
    expect(lines).toContainEqual(expect.objectContaining({ msg: "request done", status: 400 }));
  });

  it("answers a chunked body cut off mid-upload with a 400, never an error-level log", async () => {
    // Locally the dev proxy ends such a body early rather than failing it: the worker sees
    // truncated JSON (invalid_json); either way it is a client problem.
    const offset = statSync(inject("stackLogFile")).size;
    await rawExchange(`${head("Transfer-Encoding: chunked\r\n")}10\r\n[{"id": "cut", \r\n`, {
      closeAfterMs: 300,
    });
    const lines = await outcomeLines(offset, ["incomplete_body", "invalid_json"]);
    expect(lines.filter((l) => l.level === "error")).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ msg: "request done", status: 400 }));
  });

  it("never runs the worker for Content-Length: -1 (the local runtime refuses the framing itself)", async () => {
    // workerd's HTTP parser refuses the request before any worker runs (a bare 500 with
    // Connection: close). The worker's own 400 for what reaches it is tested in body.test.ts.
    const offset = statSync(inject("stackLogFile")).size;
    const answer = await rawExchange(`${head("Content-Length: -1\r\n")}[]`, {
      closeAfterMs: 1000,
      halfClose: true,
    });
    expect(answer).toMatch(/^HTTP\/1\.1 [45]\d\d /);
    expect(logLinesSince(offset).filter((l) => l.worker === "ingest")).toEqual([]);
  });
});

describe("the ingest hardening corpus", () => {
  it("answers every case with the contract's 4xx error, one keep-alive pool throughout", async () => {
    const client = new StackClient(stackUrl(), stripeUrl(), "");
    const problems: string[] = [];
    for (const c of INGEST_HARDENING_CORPUS) {
      const problem = await runCase(client, c);
      if (problem) problems.push(problem);
    }
    expect(problems).toEqual([]);
    // and the connection pool is still good for real traffic
    const res = await fetch(stackUrl("/v1/events"), {
      method: "POST",
      headers: { ...auth, "content-type": "application/cloudevents-batch+json" },
      body: batchOf(`after-corpus-${Date.now()}`),
    });
    expect(res.status).toBe(202);
  });
});
