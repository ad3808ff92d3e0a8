import { stackSetup } from "@aigate/test-support/stack";

// Invoices are finalized as soon as they are due (no grace): the examples look at them at once.
export default stackSetup("lifecycle", { emulatorClock: true });
