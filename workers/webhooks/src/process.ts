/**
 * Applying one verified Stripe event: dedupe on its id (home database), re-fetch the objects it
 * concerns from Stripe and write what Stripe holds now (never the event's snapshot, which may be
 * stale) in one db.batch() on the user's shard, then the dedupe row in home: in that same batch
 * when the user lives on home. A crash before the dedupe row is written leaves the event
 * unprocessed, so Stripe's resend applies it again; a batch applied twice changes nothing.
 */
import { type IssueDetail, issueDetails } from "@aigate/shared";
import {
  CheckoutSessionRef,
  isHandledEventType,
  ScheduleRef,
  StripeEventEnvelope,
  type StripeEventHead,
} from "@aigate/shared/stripeSync/objects";
import { isEventProcessed, markEventProcessed } from "@aigate/shared/stripeSync/queries";
import { type SyncDeps, type SyncTarget, syncFromStripe } from "@aigate/shared/stripeSync/sync";

export { isMissingObject, UnreadableStripeObject } from "@aigate/shared/stripeSync/sync";

export type Outcome =
  | { status: "processed" }
  | { status: "duplicate" }
  /** `issues` when the payload lacks what we read (logged, never sent back). */
  | { status: "ignored"; reason: string; issues?: PayloadIssue[] };

/** One thing wrong with a payload: where (a dotted path from the event's root) and what. */
export type PayloadIssue = IssueDetail;

const describeIssues = (issues: readonly PayloadIssue[]) =>
  issues
    .slice(0, 3)
    .map((i) => `${i.path || "(root)"}: ${i.message}`)
    .join("; ") + (issues.length > 3 ? `; and ${issues.length - 3} more` : "");

/**
 * An authentic event whose payload lacks what we read. Stripe would resend the same payload for
 * days on a non-2xx answer, so it is acknowledged as ignored (and logged with its issues).
 */
function unusable(issues: PayloadIssue[]): Outcome {
  return { status: "ignored", reason: `unusable payload: ${describeIssues(issues)}`, issues };
}

export type Deps = SyncDeps;

/** The event's target, or why it has none (the outcome to answer). */
function targetOf(event: StripeEventEnvelope): SyncTarget | Outcome {
  const { type, data } = event;
  if (type === "checkout.session.completed") {
    const parsed = CheckoutSessionRef.safeParse(data.object);
    if (!parsed.success) return unusable(issueDetails(parsed.error, ["data", "object"]));
    const session = parsed.data;
    if (session.mode !== "subscription" || !session.subscription)
      return { status: "ignored", reason: "not a subscription checkout" };
    const hints = [session.client_reference_id, session.metadata.user_id].filter((h): h is string => !!h);
    return { subscriptionId: session.subscription, invoiceId: null, userHints: hints };
  }
  const { id } = data.object;
  if (type.startsWith("subscription_schedule.")) {
    const parsed = ScheduleRef.safeParse(data.object);
    if (!parsed.success) return unusable(issueDetails(parsed.error, ["data", "object"]));
    const subscription = parsed.data.subscription ?? parsed.data.released_subscription;
    if (!subscription) return { status: "ignored", reason: "schedule without subscription" };
    return { subscriptionId: subscription, invoiceId: null, userHints: [] };
  }
  if (type.startsWith("customer.subscription."))
    return { subscriptionId: id, invoiceId: null, userHints: [] };
  return { subscriptionId: null, invoiceId: id, userHints: [] };
}

/**
 * Applies a verified event. `head` is its id and type (already read from `payload`); the rest of
 * `payload` is read here, only for the types we handle.
 */
export async function processEvent(deps: Deps, head: StripeEventHead, payload: unknown): Promise<Outcome> {
  if (!isHandledEventType(head.type))
    return { status: "ignored", reason: `unhandled event type ${head.type}` };
  const parsed = StripeEventEnvelope.safeParse(payload);
  if (!parsed.success) return unusable(issueDetails(parsed.error));
  const event = parsed.data;
  const { type } = event;
  if (await isEventProcessed(deps.shards.home, event.id)) return { status: "duplicate" };

  const target = targetOf(event);
  if ("status" in target) return target;

  return syncFromStripe(deps, target, (now) => [
    markEventProcessed(deps.shards.home, { id: event.id, type, createdMs: event.created * 1000 }, now),
  ]);
}
