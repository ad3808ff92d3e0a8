import { workerTestConfig } from "@aigate/test-support/vitest";

export default workerTestConfig({ dir: import.meta.dirname, configFile: "wrangler.test.jsonc" });
