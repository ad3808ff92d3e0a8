import { stackSetup } from "@aigate/test-support/stack";

export default stackSetup("e2e");
