/**
 * The bad-input corpus: for every HTTP endpoint, requests that the contract refuses (malformed
 * JSON, wrong types, huge numbers, odd unicode, oversized bodies, missing auth, forged tokens and
 * signatures). Each must get the contract's error envelope with the documented 4xx status, never
 * a 5xx, and leave D1 unchanged (the suite compares a dump before and after).
 */
import { DEV_ADMIN_KEY, DEV_INGEST_KEY, DEV_SECRETS } from "@aigate/test-support";
import { SignJWT } from "jose";
import { isRecord, type StackClient, stripeSignature, userToken } from "./clients";
import { INGEST_HARDENING_CORPUS } from "./corpus-ingest-hardening";
import { webhooksHardeningCorpus } from "./corpus-webhooks-hardening";

export interface BadRequest {
  name: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array<ArrayBuffer> | (() => ReadableStream<Uint8Array>);
  /** Acceptable statuses (the contract's). */
  status: number[];
  /** The error code the contract names, when it names one. */
  code?: string;
}

export interface CorpusUsers {
  free: string;
  payg: string;
  pro: string;
}

const b64url = (s: string) => Buffer.from(s).toString("base64url");

function validEvent(overrides: Record<string, unknown> = {}, data: Record<string, unknown> = {}) {
  return {
    specversion: "1.0",
    id: "evt-corpus-1",
    source: "gw-corpus",
    type: "aigate.session.heartbeat",
    subject: "sess-corpus-1",
    time: new Date().toISOString(),
    ...overrides,
    data: { user_id: "corpus-user", project_id: "proj-corpus", audio_ms: 1000, ...data },
  };
}

const ingestAuth = { authorization: `Bearer ${DEV_INGEST_KEY}` };
const json = { "content-type": "application/json" };
const batch = { "content-type": "application/cloudevents-batch+json" };

function events(name: string, body: unknown, status: number[], code?: string): BadRequest {
  return {
    name: `events: ${name}`,
    method: "POST",
    path: "/v1/events",
    headers: { ...ingestAuth, ...batch },
    body: typeof body === "string" ? body : JSON.stringify(body),
    status,
    ...(code ? { code } : {}),
  };
}

function admit(name: string, body: string, status: number[], code?: string, headers = {}): BadRequest {
  return {
    name: `admit: ${name}`,
    method: "POST",
    path: "/v1/sessions/admit",
    headers: { ...ingestAuth, ...json, ...headers },
    body,
    status,
    ...(code ? { code } : {}),
  };
}

/** Forged, expired and malformed user tokens, each with what is wrong with it. */
export async function forgedTokens(userId: string): Promise<Array<[string, string]>> {
  const now = Math.floor(Date.now() / 1000);
  const secret = new TextEncoder().encode(DEV_SECRETS.USER_TOKEN_SECRET);
  const valid = await userToken(userId);
  const [header, , signature] = valid.split(".");
  return [
    [
      "alg none",
      `${b64url('{"alg":"none","typ":"JWT"}')}.${b64url(JSON.stringify({ sub: userId, exp: now + 3600 }))}.`,
    ],
    [
      "wrong secret",
      await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(userId)
        .setExpirationTime(now + 3600)
        .sign(new TextEncoder().encode("not-the-secret")),
    ],
    [
      "expired",
      await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(userId)
        .setIssuedAt(now - 7200)
        .setExpirationTime(now - 3600)
        .sign(secret),
    ],
    ["no exp", await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject(userId).sign(secret)],
    [
      "no sub",
      await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setExpirationTime(now + 3600)
        .sign(secret),
    ],
    [
      "empty sub",
      await new SignJWT({ sub: "" })
        .setProtectedHeader({ alg: "HS256" })
        .setExpirationTime(now + 3600)
        .sign(secret),
    ],
    [
      "sub of 201 characters",
      await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject("u".repeat(201))
        .setExpirationTime(now + 3600)
        .sign(secret),
    ],
    [
      "HS512",
      await new SignJWT({})
        .setProtectedHeader({ alg: "HS512" })
        .setSubject(userId)
        .setExpirationTime(now + 3600)
        .sign(new TextEncoder().encode(DEV_SECRETS.USER_TOKEN_SECRET.repeat(3))),
    ],
    [
      "payload swapped under a valid signature",
      `${header}.${b64url(JSON.stringify({ sub: "someone-else", exp: now + 3600 }))}.${signature}`,
    ],
    ["three garbage segments", "a.b.c"],
    ["an ingest key", DEV_INGEST_KEY],
  ];
}

export async function buildCorpus(users: CorpusUsers, subscriptionId: string): Promise<BadRequest[]> {
  const cases: BadRequest[] = [];
  const big = "x".repeat(1024 * 1024 + 10);

  // --- POST /v1/events
  const good = JSON.stringify([validEvent()]);
  cases.push(
    {
      name: "events: no auth",
      method: "POST",
      path: "/v1/events",
      headers: batch,
      body: good,
      status: [401],
    },
    {
      name: "events: unknown key",
      method: "POST",
      path: "/v1/events",
      headers: { ...batch, authorization: "Bearer aig_forged_key" },
      body: good,
      status: [401],
    },
    {
      name: "events: basic auth",
      method: "POST",
      path: "/v1/events",
      headers: { ...batch, authorization: `Basic ${b64url(`x:${DEV_INGEST_KEY}`)}` },
      body: good,
      status: [401],
    },
    {
      name: "events: admin key (wrong scope)",
      method: "POST",
      path: "/v1/events",
      headers: { ...batch, authorization: `Bearer ${DEV_ADMIN_KEY}` },
      body: good,
      status: [403],
    },
    events("malformed JSON", '[{"specversion": "1.0",', [400], "invalid_json"),
    {
      name: "events: not UTF-8",
      method: "POST",
      path: "/v1/events",
      headers: { ...ingestAuth, ...json },
      body: new Uint8Array([0x5b, 0xff, 0xfe, 0x5d]),
      status: [400],
      code: "invalid_json",
    },
    events("a JSON scalar", "42", [400], "invalid_request"),
    events("null", "null", [400], "invalid_request"),
    events("an empty batch", "[]", [400], "invalid_request"),
    {
      name: "events: an array sent as one event",
      method: "POST",
      path: "/v1/events",
      headers: { ...ingestAuth, "content-type": "application/cloudevents+json" },
      body: good,
      status: [400],
      code: "invalid_request",
    },
    events("an object sent as a batch", JSON.stringify(validEvent()), [400], "invalid_request"),
    events("id of the wrong type", [validEvent({ id: 17 })], [400], "invalid_event"),
    events("audio_ms as a string", [validEvent({}, { audio_ms: "5000" })], [400], "invalid_event"),
    events("data is null", [{ ...validEvent(), data: null }], [400], "invalid_event"),
    events(
      "user_id missing",
      [{ ...validEvent(), data: { project_id: "p", audio_ms: 1 } }],
      [400],
      "invalid_event",
    ),
    events(
      "audio_ms 1e308",
      '[{"specversion":"1.0","id":"e","source":"g","type":"aigate.session.heartbeat","subject":"s","time":"' +
        new Date().toISOString() +
        '","data":{"user_id":"u","project_id":"p","audio_ms":1e308}}]',
      [400],
      "invalid_event",
    ),
    events(
      "audio_ms 2^63",
      '[{"specversion":"1.0","id":"e","source":"g","type":"aigate.session.heartbeat","subject":"s","time":"' +
        new Date().toISOString() +
        '","data":{"user_id":"u","project_id":"p","audio_ms":9223372036854775808}}]',
      [400],
      "invalid_event",
    ),
    events("negative audio", [validEvent({}, { audio_ms: -1 })], [400], "invalid_event"),
    events("fractional audio", [validEvent({}, { audio_ms: 1.5 })], [400], "invalid_event"),
    events(
      "connect_latency_ms 1e308",
      [validEvent({ type: "aigate.session.connected" }, { connect_latency_ms: Number.MAX_VALUE })],
      [400],
      "invalid_event",
    ),
    events(
      "upstream status 2^53+1",
      [validEvent({ type: "aigate.session.upstream_error" }, { status: 2 ** 53 + 1 })],
      [400],
      "invalid_event",
    ),
    events("time in the year 2999", [validEvent({ time: "2999-01-01T00:00:00Z" })], [400], "invalid_event"),
    events("time in 1999", [validEvent({ time: "1999-01-01T00:00:00Z" })], [400], "invalid_event"),
    events(
      "time in Arabic-Indic digits",
      [validEvent({ time: "٢٠٢٦-١١-٢٥T00:00:00Z" })],
      [400],
      "invalid_event",
    ),
    events("time not a date", [validEvent({ time: "yesterday" })], [400], "invalid_event"),
    events("unknown type", [validEvent({ type: "aigate.session.exploded" })], [400], "invalid_event"),
    events(
      "type with an RTL mark",
      [validEvent({ type: "aigate.session.created\u200f" })],
      [400],
      "invalid_event",
    ),
    events("type with a NUL", [validEvent({ type: "aigate.session.created\u0000" })], [400], "invalid_event"),
    events(
      "specversion as a lone surrogate",
      '[{"specversion":"\\ud800","id":"e","source":"g","type":"aigate.session.created","subject":"s","time":"' +
        new Date().toISOString() +
        '","data":{"user_id":"u","project_id":"p"}}]',
      [400],
      "invalid_event",
    ),
    events("specversion 1.0 with a NUL", [validEvent({ specversion: "1.0\u0000" })], [400], "invalid_event"),
    events("empty id", [validEvent({ id: "" })], [400], "invalid_event"),
    events("blank subject", [validEvent({ subject: "   " })], [400], "invalid_event"),
    events("id of 201 characters", [validEvent({ id: "e".repeat(201) })], [400], "invalid_event"),
    events(
      "one odd-unicode but valid event next to an invalid one (rejected whole)",
      [validEvent({ subject: "sess-\u202e\u200f-rtl", id: "evt-rtl" }), validEvent({ id: 5 })],
      [400],
      "invalid_event",
    ),
    events(
      "501 events",
      Array.from({ length: 501 }, (_, i) => validEvent({ id: `evt-many-${i}` })),
      [413],
      "too_many_events",
    ),
    events(
      "a body over 1 MiB",
      `[${JSON.stringify(validEvent({ id: big.slice(0, 150) }))},"${big}"]`,
      [413],
      "payload_too_large",
    ),
    {
      name: "events: a chunked body over 1 MiB",
      method: "POST",
      path: "/v1/events",
      headers: { ...ingestAuth, ...batch },
      body: () =>
        new ReadableStream<Uint8Array>({
          start(controller) {
            const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
            controller.enqueue(new TextEncoder().encode('["'));
            for (let i = 0; i < 20; i++) controller.enqueue(chunk);
            controller.enqueue(new TextEncoder().encode('"]'));
            controller.close();
          },
        }),
      status: [413],
      code: "payload_too_large",
    },
    {
      name: "events: text/plain",
      method: "POST",
      path: "/v1/events",
      headers: { ...ingestAuth, "content-type": "text/plain" },
      body: good,
      status: [415],
      code: "unsupported_media_type",
    },
    {
      name: "events: latin1 charset",
      method: "POST",
      path: "/v1/events",
      headers: { ...ingestAuth, "content-type": "application/json; charset=latin1" },
      body: good,
      status: [415],
      code: "unsupported_media_type",
    },
    {
      name: "events: GET",
      method: "GET",
      path: "/v1/events",
      headers: ingestAuth,
      status: [405],
      code: "method_not_allowed",
    },
    {
      name: "ingest: unknown path",
      method: "POST",
      path: "/v1/nope",
      headers: ingestAuth,
      body: good,
      status: [404],
    },
  );

  // --- POST /v1/sessions/admit
  const admitBody = JSON.stringify({ session_id: "corpus-admit-1", user_id: users.free, project_id: "p" });
  cases.push(
    {
      name: "admit: no auth",
      method: "POST",
      path: "/v1/sessions/admit",
      headers: json,
      body: admitBody,
      status: [401],
    },
    {
      name: "admit: admin key",
      method: "POST",
      path: "/v1/sessions/admit",
      headers: { ...json, authorization: `Bearer ${DEV_ADMIN_KEY}` },
      body: admitBody,
      status: [403],
    },
    {
      name: "admit: forged key",
      method: "POST",
      path: "/v1/sessions/admit",
      headers: { ...json, authorization: "Bearer aig_dev_ingest_" },
      body: admitBody,
      status: [401],
    },
    admit("malformed JSON", '{"session_id":', [400], "invalid_json"),
    admit("a JSON scalar", '"admit me"', [400], "invalid_request"),
    admit("missing user_id", JSON.stringify({ session_id: "s", project_id: "p" }), [400], "invalid_request"),
    admit(
      "ids as numbers",
      '{"session_id":1e308,"user_id":9223372036854775808,"project_id":1}',
      [400],
      "invalid_request",
    ),
    admit(
      "empty session id",
      JSON.stringify({ session_id: "", user_id: "u", project_id: "p" }),
      [400],
      "invalid_request",
    ),
    admit(
      "blank user id",
      JSON.stringify({ session_id: "s", user_id: " \u0009 ", project_id: "p" }),
      [400],
      "invalid_request",
    ),
    admit(
      "session id of 201 characters",
      JSON.stringify({ session_id: "s".repeat(201), user_id: "u", project_id: "p" }),
      [400],
      "invalid_request",
    ),
    admit(
      "nested object",
      JSON.stringify({ session_id: { $gt: "" }, user_id: "u", project_id: "p" }),
      [400],
      "invalid_request",
    ),
    admit(
      "a body over 16 KiB",
      JSON.stringify({ session_id: "s", user_id: "u", project_id: "p", pad: "x".repeat(17_000) }),
      [413],
      "payload_too_large",
    ),
    admit("text/plain", admitBody, [415], "unsupported_media_type", { "content-type": "text/plain" }),
  );

  // --- Billing API (user tokens)
  const billing: Array<[string, string, string | undefined]> = [
    ["GET", "/api/billing/usage", undefined],
    ["GET", "/api/billing/sessions", undefined],
    ["POST", "/api/billing/checkout", JSON.stringify({ plan: "payg" })],
    ["POST", "/api/billing/portal", undefined],
  ];
  const tokens = await forgedTokens(users.free);
  for (const [method, path, body] of billing) {
    cases.push({
      name: `${path}: no auth`,
      method,
      path,
      ...(body ? { body, headers: json } : {}),
      status: [401],
      code: "unauthorized",
    });
    cases.push({
      name: `${path}: empty bearer`,
      method,
      path,
      headers: { ...json, authorization: "Bearer " },
      ...(body ? { body } : {}),
      status: [401],
      code: "unauthorized",
    });
    for (const [what, token] of tokens) {
      cases.push({
        name: `${path}: token ${what}`,
        method,
        path,
        headers: { ...json, authorization: `Bearer ${token}` },
        ...(body ? { body } : {}),
        status: [401],
        code: "unauthorized",
      });
    }
  }
  const asFree = { authorization: `Bearer ${await userToken(users.free)}` };
  const asPayg = { authorization: `Bearer ${await userToken(users.payg)}` };
  const asPro = { authorization: `Bearer ${await userToken(users.pro)}` };
  for (const limit of ["0", "101", "1e308", "-1", "abc", "9223372036854775808", "1.5", "\u0661"]) {
    cases.push({
      name: `sessions: limit=${JSON.stringify(limit)}`,
      method: "GET",
      path: `/api/billing/sessions?limit=${encodeURIComponent(limit)}`,
      headers: asFree,
      status: [400],
      code: "invalid_request",
    });
  }
  for (const cursor of ["garbage", "\u202e\u0000", "MTc5NTY.", "%ED%A0%80"]) {
    cases.push({
      name: `sessions: cursor=${JSON.stringify(cursor)}`,
      method: "GET",
      path: `/api/billing/sessions?cursor=${cursor.startsWith("%") ? cursor : encodeURIComponent(cursor)}`,
      headers: asFree,
      status: [400],
      code: "invalid_cursor",
    });
  }
  const checkout = (name: string, body: string, status: number[], code?: string, who = asFree) => ({
    name: `checkout: ${name}`,
    method: "POST",
    path: "/api/billing/checkout",
    headers: { ...json, ...who },
    body,
    status,
    ...(code ? { code } : {}),
  });
  cases.push(
    checkout("malformed JSON", '{"plan":', [400], "invalid_request"),
    checkout("plan free", JSON.stringify({ plan: "free" }), [400], "invalid_request"),
    checkout("unknown plan", JSON.stringify({ plan: "enterprise" }), [400], "invalid_request"),
    checkout("plan as 1e308", '{"plan":1e308}', [400], "invalid_request"),
    checkout("plan with an RTL mark", JSON.stringify({ plan: "payg\u200f" }), [400], "invalid_request"),
    checkout("plan in capitals", JSON.stringify({ plan: "PAYG" }), [400], "invalid_request"),
    checkout("plan null", JSON.stringify({ plan: null }), [400], "invalid_request"),
    checkout("an array body", JSON.stringify(["payg"]), [400], "invalid_request"),
    checkout(
      "a 2 MB body with a bad plan",
      JSON.stringify({ plan: "x".repeat(2 * 1024 * 1024) }),
      [400, 413],
    ),
    checkout("already on that plan", JSON.stringify({ plan: "payg" }), [409], "already_on_plan", asPayg),
    checkout("the other paid plan", JSON.stringify({ plan: "payg" }), [409], "already_subscribed", asPro),
    {
      name: "portal: no Stripe customer yet",
      method: "POST",
      path: "/api/billing/portal",
      headers: asFree,
      status: [409],
      code: "no_stripe_customer",
    },
    {
      name: "billing: unknown path",
      method: "GET",
      path: "/api/billing/nope",
      headers: asFree,
      status: [404],
    },
  );

  // --- POST /api/webhooks/stripe
  const event = JSON.stringify({
    id: "evt_corpus_forged",
    object: "event",
    type: "customer.subscription.deleted",
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: subscriptionId, object: "subscription" } },
  });
  const now = Math.floor(Date.now() / 1000);
  const hook = (
    name: string,
    body: string,
    signature: string | null,
    status = [400],
    code: string | undefined = "invalid_signature",
  ): BadRequest => ({
    name: `webhooks: ${name}`,
    method: "POST",
    path: "/api/webhooks/stripe",
    headers: { ...json, ...(signature === null ? {} : { "stripe-signature": signature }) },
    body,
    status,
    ...(code ? { code } : {}),
  });
  cases.push(
    hook("no signature", event, null),
    hook("garbage signature", event, "garbage"),
    hook("signed with another secret", event, stripeSignature(event, "whsec_not_ours")),
    hook("stale timestamp (10 minutes)", event, stripeSignature(event, undefined, now - 600)),
    hook("body changed after signing", event.replace("deleted", "updated"), stripeSignature(event)),
    hook("v0 scheme only", event, stripeSignature(event).replace("v1=", "v0=")),
    hook("empty v1", event, `t=${now},v1=`),
    hook(
      "a 2 MB body, badly signed",
      `{"pad":"${"x".repeat(2 * 1024 * 1024)}"}`,
      "t=1,v1=00",
      [400, 413],
      undefined,
    ),
    hook(
      "validly signed malformed JSON",
      '{"id":"evt_x",',
      stripeSignature('{"id":"evt_x",'),
      [400],
      "invalid_payload",
    ),
    hook(
      "validly signed non-event",
      '{"hello":"world"}',
      stripeSignature('{"hello":"world"}'),
      [400],
      "invalid_event",
    ),
  );

  // --- Operator endpoints (admin key)
  const adminPaths: Array<[string, string, string | undefined]> = [
    ["GET", "/admin/dead-letters", undefined],
    ["POST", "/admin/dead-letters/replay", JSON.stringify({ queue: "aigate-telemetry", all: true })],
    ["GET", "/admin/metrics", undefined],
  ];
  for (const [method, path, body] of adminPaths) {
    const withBody = body ? { body } : {};
    cases.push(
      {
        name: `${path}: no auth`,
        method,
        path,
        headers: json,
        ...withBody,
        status: [401],
        code: "unauthorized",
      },
      {
        name: `${path}: ingest key`,
        method,
        path,
        headers: { ...json, ...ingestAuth },
        ...withBody,
        status: [403],
        code: "forbidden",
      },
      {
        name: `${path}: a user token`,
        method,
        path,
        headers: { ...json, ...asPro },
        ...withBody,
        status: [401],
        code: "unauthorized",
      },
      {
        name: `${path}: forged admin key`,
        method,
        path,
        headers: { ...json, authorization: "Bearer aig_dev_admin\u0009x" },
        ...withBody,
        status: [401],
        code: "unauthorized",
      },
    );
  }
  const adminAuth = { ...json, authorization: `Bearer ${DEV_ADMIN_KEY}` };
  for (const q of [
    "limit=0",
    "limit=1e308",
    "limit=-1",
    "queue=aigate-nope",
    "cursor=garbage",
    "state=%E2%80%AE",
  ]) {
    cases.push({
      name: `dead-letters: ${q}`,
      method: "GET",
      path: `/admin/dead-letters?${q}`,
      headers: adminAuth,
      status: [400],
    });
  }
  for (const [what, body] of [
    ["malformed JSON", '{"ids":['],
    ["empty object", "{}"],
    ["ids as a string", JSON.stringify({ ids: "x" })],
    ["ids as huge numbers", '{"ids":[1e308,9223372036854775808]}'],
    ["unknown queue", JSON.stringify({ queue: "aigate-nope", all: true })],
    ["all: false", JSON.stringify({ queue: "aigate-telemetry", all: false })],
    ["ids empty", JSON.stringify({ ids: [] })],
  ] as const) {
    cases.push({
      name: `replay: ${what}`,
      method: "POST",
      path: "/admin/dead-letters/replay",
      headers: adminAuth,
      body,
      status: [400],
      code: "invalid_request",
    });
  }
  for (const month of ["2026-13", "garbage", "2026-1", "\u0662\u0660\u0662\u0666-01"]) {
    cases.push({
      name: `metrics: month=${JSON.stringify(month)}`,
      method: "GET",
      path: `/admin/metrics?month=${encodeURIComponent(month)}`,
      headers: adminAuth,
      status: [400],
    });
  }
  cases.push(...INGEST_HARDENING_CORPUS, ...webhooksHardeningCorpus);
  return cases;
}

/** Sends one case; returns what is wrong with the answer (null when it is the contract's). */
export async function runCase(client: StackClient, c: BadRequest): Promise<string | null> {
  const body = typeof c.body === "function" ? c.body() : c.body;
  let res: Response;
  try {
    res = await fetch(`${client.url}${c.path}`, {
      method: c.method,
      headers: c.headers ?? {},
      body: body ?? null,
      ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
    });
  } catch (err) {
    return `${c.name}: request failed: ${String(err)}`;
  }
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  const error = isRecord(parsed) ? parsed.error : null;
  const problems: string[] = [];
  if (!c.status.includes(res.status)) problems.push(`status ${res.status}, expected ${c.status.join("|")}`);
  if (res.status >= 500) problems.push("a 5xx");
  if (
    !isRecord(parsed) ||
    !isRecord(error) ||
    typeof error.code !== "string" ||
    typeof error.message !== "string"
  ) {
    problems.push(`not the error envelope: ${text.slice(0, 160)}`);
  } else {
    if (c.code && error.code !== c.code) problems.push(`code ${error.code}, expected ${c.code}`);
    if (error.details !== undefined && !Array.isArray(error.details)) problems.push("details is not a list");
    if (Object.keys(parsed).length !== 1)
      problems.push(`extra top-level keys ${Object.keys(parsed).join(",")}`);
  }
  return problems.length > 0 ? `${c.name}: ${problems.join("; ")}` : null;
}
