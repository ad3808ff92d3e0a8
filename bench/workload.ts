/**
 * What the benchmark sends: realistic session telemetry, deterministic for a given seed.
 * A session is 5 events: created, connected, two heartbeats, ended.
 */

export const EVENTS_PER_SESSION = 5;

export interface SessionSpec {
  sessionId: string;
  userId: string;
  /** Billable under rule v1 (connected fast, >= 5 s audio) or not (too short). */
  billable: boolean;
  start: number;
}

export function sessionEvents(s: SessionSpec, source = "gw-bench"): Array<Record<string, unknown>> {
  const data = { user_id: s.userId, project_id: "proj-bench" };
  const audio = s.billable ? 12_000 : 3_000;
  const at = (ms: number) => new Date(s.start + ms).toISOString();
  const base = { specversion: "1.0", source, subject: s.sessionId };
  return [
    { ...base, id: `${s.sessionId}:0`, type: "aigate.session.created", time: at(0), data },
    {
      ...base,
      id: `${s.sessionId}:1`,
      type: "aigate.session.connected",
      time: at(250),
      data: { ...data, connect_latency_ms: 250 },
    },
    {
      ...base,
      id: `${s.sessionId}:2`,
      type: "aigate.session.heartbeat",
      time: at(2000),
      data: { ...data, audio_ms: audio / 3 },
    },
    {
      ...base,
      id: `${s.sessionId}:3`,
      type: "aigate.session.heartbeat",
      time: at(4000),
      data: { ...data, audio_ms: (2 * audio) / 3 },
    },
    {
      ...base,
      id: `${s.sessionId}:4`,
      type: "aigate.session.ended",
      time: at(audio + 1000),
      data: { ...data, audio_ms: audio },
    },
  ];
}

/** Sessions of `users`, round robin; one in five is not billable (too short). */
export function workload(users: string[], perUser: number, tag: string, start: number): SessionSpec[] {
  const sessions: SessionSpec[] = [];
  for (let i = 0; i < perUser; i++) {
    for (const [u, userId] of users.entries()) {
      sessions.push({ sessionId: `${tag}-${u}-${i}`, userId, billable: (i + u) % 5 !== 0, start });
    }
  }
  return sessions;
}

/** Billable sessions per user. */
export function billablePerUser(sessions: SessionSpec[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const s of sessions) if (s.billable) m.set(s.userId, (m.get(s.userId) ?? 0) + 1);
  return m;
}

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
