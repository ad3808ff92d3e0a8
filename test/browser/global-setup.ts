// The same stack as the end-to-end suites (so their helpers work here too), logs kept apart.
import { stackSetup } from "../support/stack-setup";

export default stackSetup("browser");
