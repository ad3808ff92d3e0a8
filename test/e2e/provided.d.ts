export {};

declare module "vitest" {
  export interface ProvidedContext {
    stackUrl: string;
    stripeUrl: string;
    /** The event names of the plans' meters. */
    paygMeter: string;
    proMeter: string;
    /** The stack's combined wrangler output (every worker's log lines). */
    stackLogFile: string;
  }
}
