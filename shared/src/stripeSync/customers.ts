/**
 * Writing one unit of Stripe work across the shards: the user's rows on the user's shard, then
 * the global rows (the customer directory, the event's dedupe row) in the home database. Never a
 * transaction across two databases: the user's shard first, its statements idempotent, so a
 * crash before home is written is repaired by the retry (Stripe's resend, the next request); when
 * the user lives on home, everything is one db.batch() (a transaction), as with one database.
 */
import type { Shards } from "../shards";
import {
  directoryFromCustomers,
  insertDirectoryEntry,
  type RecordedCustomer,
  recordedCustomer,
} from "./queries";

export interface UserWrite {
  userId: string;
  /** Statements on `shards.of(userId)`. */
  user: D1PreparedStatement[];
  /** Statements on `shards.home`, written after the user's (the event's dedupe row). */
  home: D1PreparedStatement[];
  /**
   * The customer `user` records (insertCustomer): its directory row is written in home when the
   * user's stripe_customers row records this customer (a user keeps the first one recorded).
   */
  customerId?: string;
}

/**
 * Writes `w`: the user's shard, then home. Returns the customer recorded for the user after the
 * write when `customerId` was given (else null).
 */
export async function writeForUser(shards: Shards, w: UserWrite): Promise<string | null> {
  const db = shards.of(w.userId);
  const customerId = w.customerId;
  if (db === shards.home) {
    const customer =
      customerId === undefined
        ? []
        : [directoryFromCustomers(db, customerId), recordedCustomer(db, w.userId)];
    const results = await db.batch<RecordedCustomer>([...w.user, ...customer, ...w.home]);
    return customerId === undefined ? null : recordedOf(results[w.user.length + 1]);
  }
  if (customerId === undefined) {
    if (w.user.length > 0) await db.batch(w.user);
    if (w.home.length > 0) await shards.home.batch(w.home);
    return null;
  }
  const results = await db.batch<RecordedCustomer>([...w.user, recordedCustomer(db, w.userId)]);
  const recorded = results[w.user.length]?.results[0];
  const home =
    recorded?.stripe_customer_id === customerId
      ? [insertDirectoryEntry(shards.home, w.userId, recorded), ...w.home]
      : w.home;
  if (home.length > 0) await shards.home.batch(home);
  return recorded?.stripe_customer_id ?? null;
}

function recordedOf(result: D1Result<RecordedCustomer> | undefined): string | null {
  return result?.results[0]?.stripe_customer_id ?? null;
}
