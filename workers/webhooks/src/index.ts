/** aigate-webhooks: Stripe's events turned into plans, subscriptions and invoices (see app.ts). */
import { instrumentFetch } from "@aigate/shared";
import { createApp } from "./app";

const app = createApp();

export default {
  fetch: instrumentFetch("webhooks", (request, env: Env, ctx) => app.fetch(request, env, ctx)),
} satisfies ExportedHandler<Env>;
