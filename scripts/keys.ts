/**
 * `npm run keys`: create, list and revoke API keys (stored only as SHA-256 hashes in D1).
 *
 *   npm run keys -- create --scope ingest|admin --name <label> [--remote] [--db aigate-billing]
 *   npm run keys -- list [--remote]
 *   npm run keys -- revoke <id> [--remote]
 *   tsx scripts/keys.ts dev-seed-sql > scripts/dev-seed.sql
 *
 * Local by default: the D1 state of `npm run dev` in .wrangler/state (`--persist-to` to change);
 * `--remote` for the deployed database. A revoked key stops working within 60 s (workers cache
 * key lookups for 30 s per isolate).
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { devSeedSql, isKeyScope, KEY_NAME_PATTERN, listKeysSql, newKey, revokeKeySql } from "./lib/keys";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = path.join(repoRoot, "node_modules", ".bin", "wrangler");
const CONFIG = path.join("workers", "ingest", "wrangler.jsonc");

const USAGE = `usage:
  npm run keys -- create --scope ingest|admin --name <label> [--remote] [--db <name>] [--persist-to <dir>]
  npm run keys -- list [--remote] [--db <name>] [--persist-to <dir>]
  npm run keys -- revoke <id> [--remote] [--db <name>] [--persist-to <dir>]
  tsx scripts/keys.ts dev-seed-sql`;

interface Target {
  db: string;
  remote: boolean;
  persistTo: string;
}

interface D1Output {
  results?: Record<string, unknown>[];
}

/** Runs one statement with `wrangler d1 execute` and returns its result sets. */
function execute(target: Target, sql: string): D1Output[] {
  const args = ["d1", "execute", target.db, "--config", CONFIG, "--json", "--command", sql];
  if (target.remote) args.push("--remote");
  else args.push("--local", "--persist-to", target.persistTo);
  let stdout: string;
  try {
    stdout = execFileSync(WRANGLER, args, {
      cwd: repoRoot,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    const out = err instanceof Error && "stdout" in err ? String(err.stdout) : "";
    const errOut = err instanceof Error && "stderr" in err ? String(err.stderr) : String(err);
    throw new Error(`wrangler d1 execute failed:\n${out}\n${errOut}`.trim());
  }
  const parsed: unknown = JSON.parse(stdout);
  if (!Array.isArray(parsed)) throw new Error(`unexpected wrangler output: ${stdout}`);
  return parsed.map((r): D1Output => (typeof r === "object" && r !== null ? r : {}));
}

function fail(message: string): never {
  console.error(message);
  process.exit(1);
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      scope: { type: "string" },
      name: { type: "string" },
      remote: { type: "boolean", default: false },
      db: { type: "string", default: "aigate-billing" },
      "persist-to": { type: "string", default: ".wrangler/state" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) fail(USAGE);
  const target: Target = {
    db: values.db,
    remote: values.remote,
    persistTo: path.resolve(process.cwd(), values["persist-to"]),
  };
  const where = target.remote
    ? `remote database ${target.db}`
    : `local database ${target.db} (${target.persistTo})`;

  switch (command) {
    case "create": {
      const scope = values.scope ?? "";
      const name = values.name ?? "";
      if (!isKeyScope(scope)) fail(`--scope must be ingest or admin\n${USAGE}`);
      if (!KEY_NAME_PATTERN.test(name)) {
        fail("--name: 1-100 characters of letters, digits, space and _ . : @ / ( ) -");
      }
      const created = await newKey(scope, name, Date.now());
      execute(target, created.sql);
      console.log(`created ${scope} key ${created.id} (${name}) in the ${where}`);
      console.log("key (shown once, store it now; only its SHA-256 hash is kept):");
      console.log(created.key);
      return;
    }
    case "list": {
      const rows = execute(target, listKeysSql()).flatMap((r) => r.results ?? []);
      if (rows.length === 0) {
        console.log(`no keys in the ${where}`);
        return;
      }
      const fmt = (t: unknown) => (typeof t === "number" ? new Date(t).toISOString() : "-");
      console.log(["id", "scope", "name", "created", "revoked"].join("\t"));
      for (const r of rows) {
        console.log([r.id, r.scope, r.name, fmt(r.created_at), fmt(r.revoked_at)].join("\t"));
      }
      return;
    }
    case "revoke": {
      const id = rest[0];
      if (!id) fail(`revoke needs a key id\n${USAGE}`);
      const revoked = execute(target, revokeKeySql(id, Date.now())).flatMap((r) => r.results ?? []);
      if (revoked.length === 0) fail(`no active key ${id} in the ${where}`);
      console.log(`revoked ${id} in the ${where}; workers stop accepting it within 60 s`);
      return;
    }
    case "dev-seed-sql": {
      process.stdout.write(await devSeedSql());
      return;
    }
    default:
      fail(`unknown command ${command}\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
