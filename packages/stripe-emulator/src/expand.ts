/**
 * Stripe's `expand[]`: replaces id strings by the objects they name (`data.product`,
 * `latest_invoice`, `items.data.price.product`, ...) and keeps "includable" fields such as
 * `price.tiers` or `checkout.session.line_items`, which Stripe only returns when expanded.
 */
import { invalidRequest } from "./errors";

type Tree = Map<string, Tree>;

/** Which fields each object type only returns when expanded. */
const INCLUDABLE: Record<string, readonly string[]> = {
  price: ["tiers"],
  "checkout.session": ["line_items"],
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function toTree(paths: string[]): Tree {
  const root: Tree = new Map();
  for (const path of paths) {
    let node = root;
    for (const part of path.split(".")) {
      let child = node.get(part);
      if (!child) {
        child = new Map();
        node.set(part, child);
      }
      node = child;
    }
  }
  return root;
}

export type Resolver = (id: string) => unknown;

/** Applies `expand` paths to a rendered object (or list). Unknown paths are a 400 like Stripe's. */
export function applyExpand(value: unknown, paths: string[], resolve: Resolver): unknown {
  return walk(value, toTree(paths), resolve, "");
}

function walk(value: unknown, tree: Tree, resolve: Resolver, at: string): unknown {
  if (Array.isArray(value)) return value.map((v) => walk(v, tree, resolve, at));
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  const includable = typeof value.object === "string" ? (INCLUDABLE[value.object] ?? []) : [];
  for (const [key, child] of Object.entries(value)) {
    const sub = tree.get(key);
    if (includable.includes(key) && !sub) continue;
    out[key] = expandField(child, sub ?? new Map(), resolve, at ? `${at}.${key}` : key, sub !== undefined);
  }
  for (const key of tree.keys()) {
    if (!(key in value) && !includable.includes(key)) {
      throw invalidRequest(
        `This property cannot be expanded (${at ? `${at}.${key}` : key}).`,
        undefined,
        "expand",
      );
    }
  }
  return out;
}

function expandField(value: unknown, tree: Tree, resolve: Resolver, at: string, requested: boolean): unknown {
  if (requested && typeof value === "string") {
    const resolved = resolve(value);
    if (resolved === undefined) {
      throw invalidRequest(`This property cannot be expanded (${at}).`, undefined, "expand");
    }
    return walk(resolved, tree, resolve, at);
  }
  return walk(value, tree, resolve, at);
}

/** Drops includable fields (as in webhook payloads and control responses, which are never expanded). */
export function stripIncludables(value: unknown): unknown {
  return walk(value, new Map(), () => undefined, "");
}
