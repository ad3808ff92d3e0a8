/** The Hono environment shared by the api worker's route modules. */
import type { Logger } from "@aigate/shared";

export interface ApiEnv {
  Bindings: Env;
  Variables: { log: Logger; userId: string };
}
