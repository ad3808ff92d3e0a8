/**
 * API keys for gateways (scope `ingest`) and operators (scope `admin`). Only SHA-256 hashes are
 * stored. Lookups are cached in the isolate for KEY_CACHE_TTL_MS, so authentication is not a D1
 * read per request; a revoked key stops working within that time (documented: under 60 s).
 */
import { sha256Hex } from "./crypto";
import { forbidden, unauthorized } from "./errors";

export type KeyScope = "ingest" | "admin";

export const KEY_CACHE_TTL_MS = 30_000;
const CACHE_MAX_ENTRIES = 1000;

interface CachedKey {
  scope: KeyScope | null; // null: unknown or revoked key (negative cache)
  expiresAt: number;
}

const cache = new Map<string, CachedKey>();

/** Forget cached lookups (tests, and after a local revocation). */
export function clearKeyCache(): void {
  cache.clear();
}

export function bearerToken(header: string | null | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1] ?? null;
}

/** The scope of a presented key, or null when it is unknown or revoked. */
export async function lookupKeyScope(
  db: D1Database,
  key: string,
  now = Date.now(),
): Promise<KeyScope | null> {
  // keyed by the presented key itself so a hit costs no hashing (the isolate sees the key anyway;
  // only D1 must never hold it)
  const hit = cache.get(key);
  if (hit && hit.expiresAt > now) return hit.scope;
  const hash = await sha256Hex(key);
  const row = await db
    .prepare("SELECT scope FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL")
    .bind(hash)
    .first<{ scope: KeyScope }>();
  if (cache.size >= CACHE_MAX_ENTRIES) cache.clear();
  cache.set(key, { scope: row?.scope ?? null, expiresAt: now + KEY_CACHE_TTL_MS });
  return row?.scope ?? null;
}

/** Throws the contract's 401/403 unless the Authorization header carries a key of `scope`. */
export async function requireKey(
  db: D1Database,
  authorization: string | null | undefined,
  scope: KeyScope,
  now = Date.now(),
) {
  const key = bearerToken(authorization);
  if (!key) throw unauthorized("missing bearer credentials");
  const found = await lookupKeyScope(db, key, now);
  if (found === null) throw unauthorized("unknown or revoked key");
  if (found !== scope) throw forbidden(`this endpoint needs a key with scope '${scope}'`);
}
