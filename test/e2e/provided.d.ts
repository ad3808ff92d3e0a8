export {};

declare module "vitest" {
  export interface ProvidedContext {
    stackUrl: string;
    stripeUrl: string;
    meterEventName: string;
  }
}
