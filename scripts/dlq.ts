/**
 * `npm run dlq`: list, inspect, replay and purge dead letters through the admin API.
 *
 *   npm run dlq -- list [--queue <q>] [--state pending|replayed|all] [--limit <n>] [--json]
 *   npm run dlq -- show <id>
 *   npm run dlq -- replay <id>... [--force]        re-send; an id already replayed is skipped unless --force
 *   npm run dlq -- replay --queue <q> --all        every dead letter of <q> not replayed yet
 *   npm run dlq -- purge <id>... [--force]         delete; only replayed ones unless --force
 *   npm run dlq -- purge --queue <q> --all         delete the replayed dead letters of <q>
 *
 * Options: --url (default $AIGATE_URL, else the local stack http://127.0.0.1:$PORT, PORT as for
 * `npm run dev`, default 8787), --key (default $AIGATE_ADMIN_KEY or the local dev key
 * aig_dev_admin). Queues: aigate-telemetry, aigate-verdicts, aigate-alerts.
 * Exit status: 0 when everything asked was done or skipped with a reason, 1 otherwise.
 */
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { z } from "zod";
import { DEV_ADMIN_KEY } from "./dev/credentials";
import { stackOrigin } from "./dev/ports";

const USAGE = `usage:
  npm run dlq -- list [--queue <q>] [--state pending|replayed|all] [--limit <n>] [--json]
  npm run dlq -- show <id>
  npm run dlq -- replay <id>... [--force] | replay --queue <q> --all
  npm run dlq -- purge <id>... [--force]  | purge --queue <q> --all
options: --url <base url> (default $AIGATE_URL, else http://127.0.0.1:$PORT, PORT default 8787)
         --key <admin key> (default $AIGATE_ADMIN_KEY or ${DEV_ADMIN_KEY})`;

export interface Io {
  out(line: string): void;
  err(line: string): void;
  env: Record<string, string | undefined>;
  fetch: typeof fetch;
}

const DeadLetterSummary = z.object({
  id: z.string(),
  queue: z.string(),
  error: z.string(),
  attempts: z.number(),
  first_failed_at: z.string(),
  replayed_at: z.string().nullable(),
  replay_count: z.number(),
  summary: z.string(),
});
type DeadLetterSummary = z.infer<typeof DeadLetterSummary>;
const ListPage = z.object({ dead_letters: z.array(DeadLetterSummary), next_cursor: z.string().nullable() });
const ReplayResult = z.object({
  replayed: z.number(),
  ids: z.array(z.string()),
  skipped: z.array(z.object({ id: z.string(), reason: z.string() })),
  failed: z.array(z.object({ id: z.string(), error: z.string() })),
  more: z.boolean(),
});
type ReplayResult = z.infer<typeof ReplayResult>;
const PurgeResult = z.object({
  purged: z.number(),
  ids: z.array(z.string()),
  skipped: z.array(z.object({ id: z.string(), reason: z.string() })).optional(),
});
const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string(), details: z.array(z.unknown()).optional() }),
});

class CliError extends Error {}

interface Answer {
  status: number;
  data: unknown;
}

async function request(io: Io, base: string, key: string, method: string, path: string, body?: unknown) {
  let res: Response;
  try {
    res = await io.fetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new CliError(`cannot reach ${base}: ${String(err)}`);
  }
  const text = await res.text();
  let data: unknown = text;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status: res.status, data } satisfies Answer;
}

function errorText(a: Answer): string {
  const body = ErrorBody.safeParse(a.data);
  return body.success
    ? `HTTP ${a.status} ${body.data.error.code}: ${body.data.error.message}`
    : `HTTP ${a.status}: ${typeof a.data === "string" ? a.data : JSON.stringify(a.data)}`;
}

/** The body of a 200 answer, parsed; anything else is a CliError with the API's message. */
function ok<T>(schema: z.ZodType<T>, a: Answer): T {
  if (a.status !== 200) throw new CliError(errorText(a));
  const parsed = schema.safeParse(a.data);
  if (!parsed.success) throw new CliError(`unexpected answer: ${JSON.stringify(a.data)}`);
  return parsed.data;
}

function printReplay(io: Io, r: ReplayResult): void {
  io.out(`replayed ${r.replayed}${r.ids.length > 0 ? `: ${r.ids.join(", ")}` : ""}`);
  for (const s of r.skipped) io.out(`skipped ${s.id} (${s.reason})`);
  for (const f of r.failed) io.err(`failed ${f.id}: ${f.error}`);
}

function printList(io: Io, rows: DeadLetterSummary[]): void {
  if (rows.length === 0) {
    io.out("no dead letters");
    return;
  }
  for (const r of rows) {
    const replayed = r.replayed_at ? `replayed ${r.replay_count}x, last ${r.replayed_at}` : "not replayed";
    io.out(`${r.id}\n  ${r.first_failed_at}  ${replayed}\n  why:  ${r.error}\n  what: ${r.summary}`);
  }
  io.out(`${rows.length} dead letter(s)`);
}

function selection(ids: string[], queue: string | undefined, all: boolean, force: boolean): unknown {
  if (all) {
    if (!queue || ids.length > 0) throw new CliError("--all needs --queue <q> and no ids");
    if (force) throw new CliError("--force applies to ids only");
    return { queue, all: true };
  }
  if (ids.length === 0) throw new CliError("give dead letter ids, or --queue <q> --all");
  if (ids.length > 100) throw new CliError("at most 100 ids at a time");
  return force ? { ids, force: true } : { ids };
}

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      queue: { type: "string" },
      state: { type: "string" },
      limit: { type: "string" },
      all: { type: "boolean", default: false },
      force: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  const [command, ...ids] = positionals;
  if (values.help || !command) {
    io.out(USAGE);
    return values.help ? 0 : 1;
  }
  let base: string;
  try {
    base = (values.url ?? io.env.AIGATE_URL ?? stackOrigin(io.env)).replace(/\/+$/, "");
  } catch (err) {
    io.err(err instanceof Error ? err.message : String(err));
    return 1;
  }
  const key = values.key ?? io.env.AIGATE_ADMIN_KEY ?? DEV_ADMIN_KEY;
  const call = (method: string, path: string, body?: unknown) => request(io, base, key, method, path, body);

  try {
    switch (command) {
      case "list": {
        const q = new URLSearchParams();
        if (values.queue) q.set("queue", values.queue);
        if (values.state) q.set("state", values.state);
        q.set("limit", values.limit ?? "100");
        const rows: DeadLetterSummary[] = [];
        let cursor: string | null = null;
        do {
          if (cursor) q.set("cursor", cursor);
          const page = ok(ListPage, await call("GET", `/admin/dead-letters?${q}`));
          rows.push(...page.dead_letters);
          // --limit asks for one page; without it, every page.
          cursor = values.limit ? null : page.next_cursor;
        } while (cursor);
        if (values.json) io.out(JSON.stringify(rows, null, 2));
        else printList(io, rows);
        return 0;
      }
      case "show": {
        const [id] = ids;
        if (!id || ids.length !== 1) throw new CliError("show takes exactly one id");
        const a = await call("GET", `/admin/dead-letters/${encodeURIComponent(id)}`);
        if (a.status !== 200) throw new CliError(errorText(a));
        io.out(JSON.stringify(a.data, null, 2));
        return 0;
      }
      case "purge": {
        const body = selection(ids, values.queue, values.all, values.force);
        const d = ok(PurgeResult, await call("POST", "/admin/dead-letters/purge", body));
        io.out(`purged ${d.purged}${d.ids.length > 0 ? `: ${d.ids.join(", ")}` : ""}`);
        for (const s of d.skipped ?? []) io.out(`skipped ${s.id} (${s.reason})`);
        return 0;
      }
      case "replay": {
        const body = selection(ids, values.queue, values.all, values.force);
        // A whole-queue replay is repeated while the API says more remain.
        for (;;) {
          const a = await call("POST", "/admin/dead-letters/replay", body);
          if (a.status === 200) {
            const result = ok(ReplayResult, a);
            printReplay(io, result);
            if (!result.more) return 0;
            continue;
          }
          // 503 replay_incomplete carries the partial result: show what was re-sent, then fail.
          const partial = ReplayResult.safeParse(ErrorBody.safeParse(a.data).data?.error.details?.[0]);
          if (partial.success) printReplay(io, partial.data);
          throw new CliError(errorText(a));
        }
      }
      default:
        throw new CliError(`unknown command ${command}\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof CliError) {
      io.err(err.message);
      return 1;
    }
    throw err;
  }
}

const invokedDirectly =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  run(process.argv.slice(2), {
    out: (line) => console.log(line),
    err: (line) => console.error(line),
    env: process.env,
    fetch,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
