/**
 * Careful readers for Stripe's form-encoded parameters (parsed by qs into nested objects:
 * `a[b][0][c]=1` -> `{a: {b: [{c: "1"}]}}`). Every reader validates and throws Stripe-shaped
 * 400s naming the parameter path, e.g. `tiers[1][up_to]`.
 */
import qs from "qs";
import { invalidRequest, missingParam } from "./errors";
import type { Metadata } from "./state";

type Raw = qs.ParsedQs[string];

export function parseForm(text: string): qs.ParsedQs {
  return qs.parse(text, {
    depth: 10,
    arrayLimit: 1000,
    parameterLimit: 10_000,
    plainObjects: true,
    allowPrototypes: true,
    ignoreQueryPrefix: true,
  });
}

function isObject(value: Raw): value is qs.ParsedQs {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export class Params {
  constructor(
    readonly raw: qs.ParsedQs,
    private readonly prefix = "",
  ) {}

  name(key: string): string {
    return this.prefix ? `${this.prefix}[${key}]` : key;
  }

  private get(key: string): Raw {
    return Object.hasOwn(this.raw, key) ? this.raw[key] : undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  optString(key: string): string | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    if (typeof value !== "string") {
      throw invalidRequest(`Invalid string: ${this.name(key)} must be a string.`, undefined, this.name(key));
    }
    return value;
  }

  string(key: string): string {
    const value = this.optString(key);
    if (value === undefined || value === "") throw missingParam(this.name(key));
    return value;
  }

  /** A string where "" means "unset" (null), as for `email=` or `lookup_key=` on updates. */
  optNullableString(key: string): string | null | undefined {
    const value = this.optString(key);
    return value === "" ? null : value;
  }

  optInt(key: string, opts: { min?: number; max?: number } = {}): number | undefined {
    const value = this.optString(key);
    if (value === undefined) return undefined;
    const name = this.name(key);
    if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
      throw invalidRequest(`Invalid integer: ${value}`, "parameter_invalid_integer", name);
    }
    const n = Number(value);
    if (opts.min !== undefined && n < opts.min) {
      throw invalidRequest(
        `This value must be greater than or equal to ${opts.min}.`,
        "parameter_invalid_integer",
        name,
      );
    }
    if (opts.max !== undefined && n > opts.max) {
      throw invalidRequest(
        `This value must be less than or equal to ${opts.max}.`,
        "parameter_invalid_integer",
        name,
      );
    }
    return n;
  }

  int(key: string, opts: { min?: number; max?: number } = {}): number {
    const value = this.optInt(key, opts);
    if (value === undefined) throw missingParam(this.name(key));
    return value;
  }

  optBool(key: string): boolean | undefined {
    const value = this.optString(key);
    if (value === undefined) return undefined;
    if (value === "true") return true;
    if (value === "false") return false;
    throw invalidRequest(`Invalid boolean: ${value}`, undefined, this.name(key));
  }

  optEnum<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const value = this.optString(key);
    if (value === undefined) return undefined;
    const match = allowed.find((a) => a === value);
    if (match === undefined) {
      throw invalidRequest(
        `Invalid ${this.name(key)}: must be one of ${allowed.join(", ")}`,
        undefined,
        this.name(key),
      );
    }
    return match;
  }

  enumOf<T extends string>(key: string, allowed: readonly T[]): T {
    const value = this.optEnum(key, allowed);
    if (value === undefined) throw missingParam(this.name(key));
    return value;
  }

  optObject(key: string): Params | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    if (!isObject(value)) {
      throw invalidRequest(`Invalid object: ${this.name(key)} must be a hash.`, undefined, this.name(key));
    }
    return new Params(value, this.name(key));
  }

  object(key: string): Params {
    const value = this.optObject(key);
    if (value === undefined) throw missingParam(this.name(key));
    return value;
  }

  /** Indexed arrays of hashes: `line_items[0][price]=...`. */
  list(key: string): Params[] {
    return this.rawList(key).map((value, i) => {
      const name = `${this.name(key)}[${i}]`;
      if (!isObject(value)) throw invalidRequest(`Invalid object: ${name} must be a hash.`, undefined, name);
      return new Params(value, name);
    });
  }

  /** Arrays of strings: `expand[]=a`, `lookup_keys[0]=b`. */
  stringList(key: string): string[] {
    return this.rawList(key).map((value, i) => {
      if (typeof value !== "string") {
        const name = `${this.name(key)}[${i}]`;
        throw invalidRequest(`Invalid array: ${name} must be a string.`, undefined, name);
      }
      return value;
    });
  }

  private rawList(key: string): Raw[] {
    const value = this.get(key);
    if (value === undefined || value === "") return [];
    if (Array.isArray(value)) return value;
    if (isObject(value)) {
      // qs turns sparse or very large indices into objects: {"0": ..., "12": ...}
      const keys = Object.keys(value);
      if (keys.every((k) => /^\d+$/.test(k))) {
        return keys.sort((a, b) => Number(a) - Number(b)).map((k) => value[k]);
      }
    }
    if (typeof value === "string") return [value];
    throw invalidRequest(`Invalid array: ${this.name(key)}`, undefined, this.name(key));
  }

  /** A map of string values such as `payload[...]` (no length rules). */
  stringMap(key: string): Metadata | undefined {
    const value = this.optObject(key);
    if (value === undefined) return undefined;
    const entries = Object.keys(value.raw).map((k): [string, string] => [k, value.string(k)]);
    return Object.fromEntries(entries);
  }

  /**
   * Metadata updates as Stripe reads them: `metadata[k]=v` sets, `metadata[k]=` deletes a key,
   * `metadata=` clears everything. Returns undefined when absent.
   */
  metadataUpdate(key = "metadata"): { clear: boolean; set: [string, string | null][] } | undefined {
    const value = this.get(key);
    if (value === undefined) return undefined;
    if (value === "") return { clear: true, set: [] };
    const obj = this.object(key);
    const set = Object.keys(obj.raw).map((k): [string, string | null] => {
      const v = obj.optString(k) ?? "";
      if (k.length > 40) {
        throw invalidRequest(
          `Metadata keys can have up to 40 characters, but you passed in ${k}.`,
          undefined,
          obj.name(k),
        );
      }
      if (v.length > 500) {
        throw invalidRequest(
          `Metadata values can have up to 500 characters, but you passed in a value that is ${v.length} characters.`,
          undefined,
          obj.name(k),
        );
      }
      return [k, v === "" ? null : v];
    });
    return { clear: false, set };
  }

  /** Applies a metadata update to existing metadata (new object; at most 50 keys). */
  metadata(existing: Metadata = {}, key = "metadata"): Metadata {
    const update = this.metadataUpdate(key);
    if (update === undefined) return existing;
    const entries = new Map(update.clear ? [] : Object.entries(existing));
    for (const [k, v] of update.set) {
      if (v === null) entries.delete(k);
      else entries.set(k, v);
    }
    if (entries.size > 50) {
      throw invalidRequest("Metadata can have up to 50 keys.", undefined, this.name(key));
    }
    return Object.fromEntries(entries);
  }

  expand(): string[] {
    const paths = this.stringList("expand");
    for (const path of paths) {
      if (path.split(".").length > 4) {
        throw invalidRequest(
          `You cannot expand more than 4 levels of a property. Property: ${path}`,
          undefined,
          "expand",
        );
      }
    }
    return paths;
  }
}
