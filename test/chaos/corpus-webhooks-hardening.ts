/**
 * More bad input for the corpus (corpus.ts): validly signed webhook bodies that are not Stripe
 * events, and metrics months before 2000. Each gets its 4xx with the error envelope, never
 * `invalid_signature` for a good signature, and writes nothing.
 *
 * The signatures are made by the official SDK when a case is sent (`headers` is a getter): the
 * corpus runs minutes after import, beyond the 300 s tolerance of a signature made at import.
 */
import { DEV_ADMIN_KEY, DEV_SECRETS } from "@aigate/test-support";
import Stripe from "stripe";
import type { BadRequest } from "./corpus";

const json = { "content-type": "application/json" };

/** A body signed with the endpoint's secret at the moment the case is sent. */
function signedHook(name: string, body: string, code: string): BadRequest {
  return {
    name: `webhooks: validly signed ${name}`,
    method: "POST",
    path: "/api/webhooks/stripe",
    get headers() {
      return {
        ...json,
        "stripe-signature": Stripe.webhooks.generateTestHeaderString({
          payload: body,
          secret: DEV_SECRETS.STRIPE_WEBHOOK_SECRET,
        }),
      };
    },
    body,
    status: [400],
    code,
  };
}

const staleSigned = (body: string): BadRequest => ({
  name: "webhooks: malformed JSON signed with the right secret 10 minutes ago",
  method: "POST",
  path: "/api/webhooks/stripe",
  get headers() {
    const timestamp = Math.floor(Date.now() / 1000) - 600;
    return {
      ...json,
      "stripe-signature": Stripe.webhooks.generateTestHeaderString({
        payload: body,
        secret: DEV_SECRETS.STRIPE_WEBHOOK_SECRET,
        timestamp,
      }),
    };
  },
  body,
  status: [400],
  code: "invalid_signature",
});

export const webhooksHardeningCorpus: BadRequest[] = [
  // Not JSON under a good signature: the sender's error, not a bad signature.
  signedHook("JSON cut off", '{"id":"evt_cut","type":"invoice.paid",', "invalid_payload"),
  signedHook("plain text", "hello stripe", "invalid_payload"),
  signedHook(
    "JSON after a byte order mark",
    '\uFEFF{"id":"evt_bom","type":"invoice.paid"}',
    "invalid_payload",
  ),
  signedHook("JSON with a trailing brace", '{"id":"evt_x","type":"invoice.paid"}}', "invalid_payload"),
  signedHook("NaN literal", '{"id":"evt_nan","type":"invoice.paid","created":NaN}', "invalid_payload"),
  signedHook("1 MB of garbage", `{${"x".repeat(1024 * 1024)}`, "invalid_payload"),
  // JSON, but not a Stripe event (no string id and type).
  signedHook("empty object", "{}", "invalid_event"),
  signedHook("array of events", '[{"id":"evt_1","type":"invoice.paid"}]', "invalid_event"),
  signedHook("null", "null", "invalid_event"),
  signedHook("number", "1e308", "invalid_event"),
  signedHook("string", '"evt_1"', "invalid_event"),
  signedHook("numeric id", '{"id":17,"type":"customer.subscription.created"}', "invalid_event"),
  signedHook("empty type", '{"id":"evt_1","type":""}', "invalid_event"),
  signedHook("type as a list", '{"id":"evt_1","type":["invoice.paid"]}', "invalid_event"),
  // The signature is checked before the body is read.
  staleSigned('{"id":"evt_stale",'),
  // Months whose year Date.UTC would read as 19xx, and other years before 2000.
  ...["0050-06", "0000-01", "0099-12", "1999-12"].map(
    (month): BadRequest => ({
      name: `metrics: month=${month}`,
      method: "GET",
      path: `/admin/metrics?month=${month}`,
      headers: { ...json, authorization: `Bearer ${DEV_ADMIN_KEY}` },
      status: [400],
      code: "invalid_request",
    }),
  ),
];
