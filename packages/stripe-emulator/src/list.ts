/** Stripe list pagination (`limit`, `starting_after`, `ending_before`), newest first. */
import { invalidRequest } from "./errors";
import type { Params } from "./params";
import type { ListObject } from "./wire";

/** Newest first: by `created` descending, later insertions first on ties. */
export function newestFirst<T extends { created: number }>(items: Iterable<T>): T[] {
  return [...items].reverse().sort((a, b) => b.created - a.created);
}

export function paginate<T extends { id: string }, V>(
  items: T[],
  params: Params,
  url: string,
  render: (item: T) => V,
): ListObject<V> {
  const limit = params.optInt("limit", { min: 1, max: 100 }) ?? 10;
  const after = params.optString("starting_after");
  const before = params.optString("ending_before");
  if (after && before) {
    throw invalidRequest("You may only specify one of these parameters: starting_after, ending_before.");
  }
  const indexOf = (id: string, param: string): number => {
    const index = items.findIndex((item) => item.id === id);
    if (index < 0) throw invalidRequest(`No such object: '${id}'`, "resource_missing", param);
    return index;
  };
  let page: T[];
  let hasMore: boolean;
  if (before) {
    const end = indexOf(before, "ending_before");
    const start = Math.max(0, end - limit);
    page = items.slice(start, end);
    hasMore = start > 0;
  } else {
    const start = after ? indexOf(after, "starting_after") + 1 : 0;
    page = items.slice(start, start + limit);
    hasMore = start + limit < items.length;
  }
  return { object: "list", data: page.map(render), has_more: hasMore, url };
}

/**
 * Stripe's `created` list filter: an exact unix time or a hash of `gt`, `gte`, `lt`, `lte`
 * ("A filter on the list, based on the object created field").
 */
export function createdFilter(p: Params): (created: number) => boolean {
  const range = p.optObject("created");
  const exact = range ? undefined : p.optInt("created");
  const gte = range?.optInt("gte") ?? Number.NEGATIVE_INFINITY;
  const gt = range?.optInt("gt") ?? Number.NEGATIVE_INFINITY;
  const lte = range?.optInt("lte") ?? Number.POSITIVE_INFINITY;
  const lt = range?.optInt("lt") ?? Number.POSITIVE_INFINITY;
  return (created) =>
    (exact === undefined || created === exact) &&
    created >= gte &&
    created > gt &&
    created <= lte &&
    created < lt;
}
