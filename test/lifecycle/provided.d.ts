export {};

declare module "vitest" {
  export interface ProvidedContext {
    stackUrl: string;
    stripeUrl: string;
    paygMeter: string;
    proMeter: string;
    stackLogFile: string;
  }
}
