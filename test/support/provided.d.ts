// Values handed from vitest's global setup (Node) to the tests and worker bindings.
export {};

declare module "vitest" {
  export interface ProvidedContext {
    /** Base URL of the Stripe emulator started for this test run. */
    stripeApiBase: string;
  }
}
