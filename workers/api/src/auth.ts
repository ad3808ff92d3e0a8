/**
 * End-user tokens: a JWT minted by the app's backend, HS256 only, signed with
 * USER_TOKEN_SECRET, with `sub` (the user id) and `exp` required. Anything else is a 401.
 */
import { bearerToken, Identifier as UserId, unauthorized } from "@aigate/shared";
import { jwtVerify } from "jose";

const encoder = new TextEncoder();

/** The user id a token speaks for; throws the contract's 401 for any invalid token. */
export async function verifyUserToken(
  authorization: string | null | undefined,
  secret: string,
): Promise<string> {
  const token = bearerToken(authorization);
  if (!token) throw unauthorized("missing bearer token");
  if (!secret) throw new Error("USER_TOKEN_SECRET is not configured");
  let sub: unknown;
  try {
    const { payload } = await jwtVerify(token, encoder.encode(secret), {
      algorithms: ["HS256"],
      requiredClaims: ["exp", "sub"],
    });
    sub = payload.sub;
  } catch {
    throw unauthorized("invalid or expired user token");
  }
  const parsed = UserId.safeParse(sub);
  if (!parsed.success) throw unauthorized("user token has no valid subject");
  return parsed.data;
}
