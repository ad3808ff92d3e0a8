import { stackSetup } from "../support/stack-setup";

export default stackSetup("e2e");
