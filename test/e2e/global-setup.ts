import { stackSetup } from "@aigate/test-support/stack";

// Four D1 shards: users of the suite live on different databases, as in a sharded deployment
// (docs/scale.md "Sharding"); the lifecycle and browser suites run one database.
export default stackSetup("e2e", { shards: 4 });
