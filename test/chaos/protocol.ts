/**
 * What the chaos entries (inside workerd) and the control server (in the test process) say to
 * each other over loopback. Types only: loads in Node and in workerd.
 */

export type ChaosWorker = "ingest" | "classifier" | "biller" | "webhooks" | "api";

/**
 * A crash planned for one invocation: the `at`-th effect (a D1 write or a queue send, counted in
 * call order) crashes. `soft`: the call throws (D1: after it ran, so its writes
 * stand); the handler sees an exception. `hard`: the same, and the isolate is treated as dead from
 * then on: every later effect throws, acks and retries are dropped, and the handler invocation
 * fails, so the runtime redelivers every message not acked before the crash. Sends crash
 * `before` (nothing sent) or `after` (sent, then the throw).
 */
export interface CrashPlan {
  at: number;
  mode: "soft" | "hard";
  send: "before" | "after";
}

export interface QueueMessageInfo {
  id: string;
  attempts: number;
  /** A stable content key (first event of the message, session id of a verdict...). */
  key: string;
  kind: "events" | "judge" | "verdict" | "other";
  /** Sessions named by an events message (poison detection). */
  sessions: string[];
}

export interface QueuePlanRequest {
  worker: ChaosWorker;
  queue: string;
  messages: QueueMessageInfo[];
}

export interface QueuePlan {
  crash: CrashPlan | null;
  /** Message ids the entry refuses this time (poison not fixed yet): retried, never processed. */
  refuse: string[];
}

export interface FetchPlanRequest {
  worker: ChaosWorker;
  /** A stable key of the request (event id of a webhook, hash of a gateway body). */
  key: string;
}

export interface ScheduledPlanRequest {
  worker: ChaosWorker;
  cron: string;
}

export interface CrashPlanResponse {
  crash: CrashPlan | null;
}

export interface CrashReport {
  worker: ChaosWorker;
  point: string;
  mode: CrashPlan["mode"];
  /** For sends: whether the send went through before the throw. */
  sent: boolean | null;
}

export interface ChaosStats {
  enabled: boolean;
  crashes: number;
  crashesByWorker: Record<string, number>;
  crashesByPoint: Record<string, number>;
  hardCrashes: number;
  refused: number;
  poisonFixed: boolean;
}
