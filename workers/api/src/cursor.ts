/**
 * Opaque pagination cursors: base64url of "<created_at>.<id>" of the last row returned.
 * A cursor only says where to continue; every query still filters by the caller's user id.
 */
import { badRequest } from "@aigate/shared";

export interface Cursor {
  createdAt: number;
  id: string;
}

export function encodeCursor(c: Cursor): string {
  const bytes = new TextEncoder().encode(`${c.createdAt}.${c.id}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function decodeCursor(raw: string): Cursor {
  const invalid = () => badRequest("invalid_cursor", "cursor is not one this API returned");
  if (!/^[A-Za-z0-9_-]{1,600}$/.test(raw)) throw invalid();
  let text: string;
  try {
    const binary = atob(raw.replace(/-/g, "+").replace(/_/g, "/"));
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(
      Uint8Array.from(binary, (ch) => ch.charCodeAt(0)),
    );
  } catch {
    throw invalid();
  }
  const m = /^(\d{1,16})\.(.+)$/s.exec(text);
  if (!m?.[1] || !m[2]) throw invalid();
  const createdAt = Number(m[1]);
  if (!Number.isSafeInteger(createdAt)) throw invalid();
  return { createdAt, id: m[2] };
}
