/**
 * The read-only guard of the dev router's `POST /__dev/query` (local development only). D1 has no
 * read-only connection and refuses `PRAGMA query_only`, and it runs every statement of a
 * multi-statement string, so a query is accepted only when it is exactly one statement and
 * SQLite's own plan for it (`EXPLAIN`) opens no write transaction.
 */

/**
 * The text of the only statement in `sql`, or null when it holds none or more than one. Follows
 * SQLite's tokenizer where a `;` can hide: '...' strings, "..." `...` [...] identifiers (quotes
 * doubled inside), `--` and `/* *\/` comments.
 */
export function singleStatement(sql: string): string | null {
  let i = 0;
  let end = -1;
  while (i < sql.length) {
    const c = sql[i];
    const next = sql[i + 1];
    if (c === "'" || c === '"' || c === "`") {
      i += 1;
      for (;;) {
        const close = sql.indexOf(c, i);
        if (close === -1) return null; // unterminated
        if (sql[close + 1] === c) {
          i = close + 2;
          continue;
        }
        i = close + 1;
        break;
      }
    } else if (c === "[") {
      const close = sql.indexOf("]", i + 1);
      if (close === -1) return null;
      i = close + 1;
    } else if (c === "-" && next === "-") {
      const nl = sql.indexOf("\n", i + 2);
      i = nl === -1 ? sql.length : nl + 1;
    } else if (c === "/" && next === "*") {
      const close = sql.indexOf("*/", i + 2);
      i = close === -1 ? sql.length : close + 2;
    } else if (c === ";") {
      end = i;
      break;
    } else {
      i += 1;
    }
  }
  if (end !== -1 && sql.slice(end + 1).trim() !== "") return null;
  const statement = (end === -1 ? sql : sql.slice(0, end)).trim();
  return statement === "" ? null : statement;
}

/** One row of SQLite's `EXPLAIN` output. */
export interface PlanStep {
  opcode: string;
  p1: number;
  p2: number;
}

/** Opcodes that change a database or its schema (any of them also needs a write transaction). */
const WRITES = new Set([
  "OpenWrite",
  "VUpdate",
  "VCreate",
  "VDestroy",
  "CreateBtree",
  "Destroy",
  "Clear",
  "DropTable",
  "DropIndex",
  "DropTrigger",
  "ParseSchema",
  "SetCookie",
  "Vacuum",
  "IncrVacuum",
  "JournalMode",
  "AutoCommit",
  "Savepoint",
]);

/** True when the plan reads only: no write transaction (`Transaction` with P2 != 0), no write opcode. */
export function planIsReadOnly(plan: readonly PlanStep[]): boolean {
  return plan.every((step) => !(step.opcode === "Transaction" && step.p2 !== 0) && !WRITES.has(step.opcode));
}
