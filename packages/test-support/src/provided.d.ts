// Values handed from vitest's global setups (Node) to the tests and the workers' bindings.
export {};

declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL of the Stripe emulator started for a worker test run (emulator-global-setup.ts). */
    stripeApiBase: string;
    /** The whole stack started for a suite (stack-setup.ts). */
    stackUrl: string;
    stripeUrl: string;
    /** The event names of the plans' meters. */
    paygMeter: string;
    proMeter: string;
    /** The stack's combined wrangler output (every worker's log lines). */
    stackLogFile: string;
    /** The stack's D1 shards (a user's rows are on shard `shardBucket(user) % stackShards`). */
    stackShards: number;
  }
}
