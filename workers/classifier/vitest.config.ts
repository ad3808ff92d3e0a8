import { workerTestConfig } from "@aigate/test-support/vitest";

// A short settle window for the test that goes through the real local queue (index.test.ts);
// unit tests set their own windows through the harness.
export default workerTestConfig({ dir: import.meta.dirname, bindings: { VERDICT_SETTLE_SECONDS: "1" } });
