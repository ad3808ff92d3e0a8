/**
 * What the sessions cost in D1 storage: the local D1 file's `dbstat` (bytes per table and index,
 * whole pages as on disk, and the payload they hold), read with SQLite itself (better-sqlite3,
 * read-only, beside the running stack) and divided by the sessions the file holds.
 */
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";

export interface StoredObject {
  /** Table or index name. */
  name: string;
  type: "table" | "index";
  /** The table an index belongs to (the table itself for a table). */
  table: string;
  /** Bytes of the pages it occupies. */
  bytes: number;
  /** Bytes of content in those pages (keys and rows). */
  payload: number;
  bytes_per_session: number;
}

export interface D1Storage {
  file_bytes: number;
  page_size: number;
  /** Rows of `sessions` in the file when it was measured. */
  sessions: number;
  /** `sessions`, its indexes and the session lists: what grows with every session. */
  sessions_bytes_per_session: number;
  /** Every object in the file, divided by the sessions (the other tables grow per user, not per session). */
  total_bytes_per_session: number;
  objects: StoredObject[];
}

/** The local D1 file under a `--persist-to` directory: the SQLite file holding `sessions`. */
export function findD1File(stateDir: string): string {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".sqlite") && !entry.name.startsWith("metadata")) files.push(full);
    }
  };
  walk(path.join(stateDir, "v3", "d1"));
  for (const file of files) {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      if (db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sessions'").get())
        return file;
    } finally {
      db.close();
    }
  }
  throw new Error(`no D1 file with a sessions table under ${stateDir}`);
}

/** What a session takes: its row, the indexes on `sessions`, and its id in its user's session lists. */
export function isOfSessions(table: string): boolean {
  return table === "sessions" || table === "session_lists";
}

export function d1Storage(stateDir: string): D1Storage {
  const file = findD1File(stateDir);
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const sessions = (db.prepare("SELECT count(*) AS n FROM sessions").get() as { n: number }).n;
    const pageSize = (db.prepare("PRAGMA page_size").get() as { page_size: number }).page_size;
    const schema = new Map(
      (
        db
          .prepare("SELECT name, type, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")
          .all() as {
          name: string;
          type: "table" | "index";
          tbl_name: string;
        }[]
      ).map((r) => [r.name, r]),
    );
    const rows = db
      .prepare(
        "SELECT name, sum(pgsize) AS bytes, sum(payload) AS payload FROM dbstat GROUP BY name ORDER BY bytes DESC",
      )
      .all() as { name: string; bytes: number; payload: number }[];
    const per = (bytes: number) => (sessions > 0 ? bytes / sessions : 0);
    const objects: StoredObject[] = rows.map((r) => {
      const s = schema.get(r.name);
      return {
        name: r.name,
        type: s?.type ?? "table",
        table: s?.tbl_name ?? r.name,
        bytes: r.bytes,
        payload: r.payload,
        bytes_per_session: per(r.bytes),
      };
    });
    const ofSessions = objects.filter((o) => isOfSessions(o.table)).reduce((a, o) => a + o.bytes, 0);
    const total = objects.reduce((a, o) => a + o.bytes, 0);
    return {
      file_bytes: statSync(file).size,
      page_size: pageSize,
      sessions,
      sessions_bytes_per_session: per(ofSessions),
      total_bytes_per_session: per(total),
      objects,
    };
  } finally {
    db.close();
  }
}
