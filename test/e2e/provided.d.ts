export {};

declare module "vitest" {
  export interface ProvidedContext {
    stackUrl: string;
    stripeUrl: string;
    meterEventName: string;
    /** The stack's combined wrangler output (every worker's log lines). */
    stackLogFile: string;
  }
}
