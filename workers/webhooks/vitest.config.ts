import { workerTestConfig } from "../../test/support/worker-vitest.ts";

export default workerTestConfig({ dir: import.meta.dirname });
