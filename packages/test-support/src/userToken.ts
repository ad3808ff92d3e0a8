import { SignJWT } from "jose";
import { TEST_SECRETS } from "./credentials";

/**
 * A user token as the app's backend mints it: HS256, sub, exp (default in an hour), signed with
 * the workers' test secret unless `secret` says otherwise (e.g. the dev stack's).
 */
export async function userToken(
  sub: string,
  opts: { secret?: string; expiresIn?: string | number | null; alg?: "HS256" | "HS512" } = {},
): Promise<string> {
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: opts.alg ?? "HS256" })
    .setSubject(sub)
    .setIssuedAt();
  if (opts.expiresIn !== null) jwt.setExpirationTime(opts.expiresIn ?? "1h");
  return jwt.sign(new TextEncoder().encode(opts.secret ?? TEST_SECRETS.USER_TOKEN_SECRET));
}
