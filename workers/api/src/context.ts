/** The Hono environment shared by the api worker's route modules. */
import type { RequestVariables } from "@aigate/shared/http";
import type { ApiConfig } from "./config";

export interface ApiEnv {
  Bindings: Env;
  Variables: RequestVariables & { config: ApiConfig; userId: string };
}
