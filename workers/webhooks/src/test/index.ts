/**
 * The webhooks worker's test entry (`@aigate/webhooks/test`), for other workspaces' tests that
 * need Stripe's events delivered the way this worker handles them (e.g. the api's checkout test,
 * against the same D1): the app, the env it runs with, and the helpers that drive the emulator
 * through a subscription and sign its events. Nothing else of this worker is importable.
 */
export { createApp } from "../app";
export type { WebhooksEnv } from "../env";
export { StripeScenario, webhookRequest } from "./support";
