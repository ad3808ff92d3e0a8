export {};

declare module "vitest" {
  export interface ProvidedContext {
    /** The chaos control server (crash plans, poison flag, crash counts). */
    chaosControlUrl: string;
    /** The local D1 directory of the chaos stack. */
    chaosPersistTo: string;
  }
}
