/**
 * A fast acceptor derived from a zod schema: the schema's own type steps and checks, called
 * directly, without zod's per-value plumbing (a result object and an issue list per field, issue
 * bookkeeping, prefixing paths). It only ever accepts: any value it cannot vouch for is reported
 * as REJECT, and the caller then runs the schema itself, which decides and explains. So the
 * schema stays the one definition of what is valid, and an error is always zod's error.
 *
 * Why: the Workers runtime forbids code generation, so zod runs its interpreted path there, which
 * spends most of a batch's validation on that plumbing rather than on the checks.
 *
 * Structure (object, optional, discriminated union) is walked here; every leaf (string, number,
 * literal, and any other kind) runs the leaf schema's own parse and checks. A schema kind the walk
 * does not know is handed to zod whole, so a new kind in the schema costs speed, never
 * correctness. The output is built as zod builds it: the shape's keys in the shape's order,
 * unknown keys dropped, absent optional keys left out, values as the checks left them (trimmed).
 */
import type { z } from "zod";

export const REJECT: unique symbol = Symbol("reject");
export type Acceptor<T> = (value: unknown) => T | typeof REJECT;

type Schema = z.core.$ZodType;
type Fn = (value: unknown) => unknown;

const CTX = { async: false } as const;

/** zod's own test for an object value (not null, not an array). */
function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The schema run by zod itself: accepted value, or REJECT on any issue (or async check). */
function whole(schema: Schema): Fn {
  return (value) => {
    const r = schema._zod.run({ value, issues: [] }, CTX);
    if (r instanceof Promise || r.issues.length > 0) return REJECT;
    return r.value;
  };
}

/**
 * A leaf: the schema's type step (its `parse`, which runs no checks) and then every check it
 * has, in order, as zod's `run` would; any issue rejects. Checks zod would skip (a `when` that
 * says no) are run anyway: a failure there only sends the value to zod, which then accepts it.
 */
function leaf(schema: Schema): Fn {
  const internals = schema._zod;
  const checks: z.core.$ZodCheck[] = [];
  if (internals.traits.has("$ZodCheck")) checks.push(schema as unknown as z.core.$ZodCheck);
  for (const check of internals.def.checks ?? []) checks.push(check);
  return (value) => {
    const payload: z.core.ParsePayload = { value, issues: [] };
    const parsed = internals.parse(payload, CTX);
    if (parsed instanceof Promise || parsed.issues.length > 0) return REJECT;
    for (const check of checks) {
      if (
        check._zod.check(parsed as z.core.ParsePayload<never>) instanceof Promise ||
        parsed.issues.length > 0
      ) {
        return REJECT;
      }
    }
    return parsed.value;
  };
}

function object(schema: z.core.$ZodObject): Fn {
  const def = schema._zod.def;
  if (def.catchall !== undefined) return whole(schema);
  const fields = Object.entries(def.shape).map(([key, field]) => {
    const optional = field._zod.def.type === "optional";
    if (optional) {
      const inner = (field as z.core.$ZodOptional)._zod.def.innerType;
      // an optional default (or other absence handling inside) is zod's business
      if (field._zod.optin !== "optional" || inner._zod.optin !== undefined) return null;
      return { key, optional, accept: compile(inner) };
    }
    // a default, or anything else that treats absence specially: zod's business too
    if (field._zod.optin !== undefined || field._zod.optout !== undefined) return null;
    return { key, optional, accept: compile(field) };
  });
  if (fields.some((f) => f === null) || Object.hasOwn(def.shape, "__proto__")) return whole(schema);
  const known = fields.filter((f) => f !== null);
  return (value) => {
    if (!isObject(value)) return REJECT;
    const out: Record<string, unknown> = {};
    for (const field of known) {
      if (!(field.key in value)) {
        if (field.optional) continue;
        return REJECT;
      }
      const v = value[field.key];
      if (v === undefined) {
        if (!field.optional) return REJECT;
        out[field.key] = undefined;
        continue;
      }
      const accepted = field.accept(v);
      if (accepted === REJECT) return REJECT;
      out[field.key] = accepted;
    }
    return out;
  };
}

function discriminatedUnion(schema: z.core.$ZodDiscriminatedUnion): Fn {
  const def = schema._zod.def;
  const byValue = new Map<unknown, Fn>();
  for (const option of def.options) {
    const values = option._zod.propValues?.[def.discriminator];
    if (!values) return whole(schema);
    const accept = compile(option);
    for (const v of values) {
      // an ambiguous or omittable discriminator: leave the choice to zod
      if (v === undefined || byValue.has(v)) return whole(schema);
      byValue.set(v, accept);
    }
  }
  return (value) => {
    if (!isObject(value)) return REJECT;
    const accept = byValue.get(value[def.discriminator]);
    return accept ? accept(value) : REJECT;
  };
}

function compile(schema: Schema): Fn {
  const def = schema._zod.def;
  // checks on a whole object or union (a refine across fields) are left to zod with their schema
  if ((def.type === "object" || def.type === "union") && (def.checks?.length ?? 0) > 0) return whole(schema);
  switch (def.type) {
    case "object":
      return object(schema as z.core.$ZodObject);
    case "union":
      return "discriminator" in def && typeof def.discriminator === "string"
        ? discriminatedUnion(schema as z.core.$ZodDiscriminatedUnion)
        : whole(schema);
    case "string":
    case "number":
    case "literal":
    case "boolean":
      return leaf(schema);
    default:
      return whole(schema);
  }
}

/** The acceptor of `schema`: its output for a value it accepts, REJECT for any other. */
export function acceptor<S extends z.core.$ZodType>(schema: S): Acceptor<z.output<S>> {
  return compile(schema) as Acceptor<z.output<S>>;
}
