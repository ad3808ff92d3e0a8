/** The Hono environment shared by the api worker's route modules. */
import type { Shards } from "@aigate/shared";
import type { RequestVariables } from "@aigate/shared/http";
import type { ApiConfig } from "./config";

export interface ApiEnv {
  Bindings: Env;
  /**
   * `shards`: the request's D1 shards (a user's rows on `shards.of(userId)`, the global tables on
   * `shards.home`).
   */
  Variables: RequestVariables & { config: ApiConfig; shards: Shards; userId: string };
}
