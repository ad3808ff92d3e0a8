/** `previous_attributes` for `*.updated` events: the old values of top-level fields that changed. */
export function diff(before: object, after: object): Record<string, unknown> {
  const prev: Record<string, unknown> = {};
  const b = new Map(Object.entries(before));
  for (const [key, value] of Object.entries(after)) {
    if (JSON.stringify(b.get(key)) !== JSON.stringify(value)) prev[key] = b.get(key) ?? null;
  }
  return prev;
}
