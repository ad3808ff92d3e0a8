// Helpers for tests on the workers' runtime and on Node alike.
export { DEV_ADMIN_KEY, DEV_INGEST_KEY, DEV_KEYS, DEV_SECRETS, TEST_SECRETS } from "./credentials";
export { seedKeys } from "./seedKeys";
export { userToken } from "./userToken";
