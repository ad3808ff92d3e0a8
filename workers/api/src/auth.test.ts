import { SELF } from "cloudflare:test";
import { TEST_SECRETS, userToken } from "@aigate/test-support";
import { SignJWT, UnsecuredJWT } from "jose";
import { describe, expect, it } from "vitest";
import { verifyUserToken } from "./auth";

const usage = (authorization?: string) =>
  SELF.fetch("http://api.test/api/billing/usage", { headers: authorization ? { authorization } : {} });

async function expect401(res: Response) {
  expect(res.status).toBe(401);
  expect(res.headers.get("www-authenticate")).toContain("Bearer");
  expect(await res.json()).toMatchObject({ error: { code: "unauthorized" } });
}

describe("user tokens", () => {
  it("accepts an HS256 token with sub and exp signed with USER_TOKEN_SECRET", async () => {
    expect(await verifyUserToken(`Bearer ${await userToken("user_a")}`, TEST_SECRETS.USER_TOKEN_SECRET)).toBe(
      "user_a",
    );
    expect((await usage(`Bearer ${await userToken("user_a")}`)).status).toBe(200);
  });

  it("answers 401 without an Authorization header or with another scheme", async () => {
    await expect401(await usage());
    await expect401(await usage(`Basic ${btoa("user_a:pw")}`));
    await expect401(await usage("Bearer not.a.jwt"));
  });

  it("answers 401 for an expired token", async () => {
    await expect401(
      await usage(`Bearer ${await userToken("user_a", { expiresIn: Math.floor(Date.now() / 1000) - 60 })}`),
    );
  });

  it("answers 401 for a token without exp", async () => {
    await expect401(await usage(`Bearer ${await userToken("user_a", { expiresIn: null })}`));
  });

  it("answers 401 for a token without sub", async () => {
    const noSub = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256" })
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(TEST_SECRETS.USER_TOKEN_SECRET));
    await expect401(await usage(`Bearer ${noSub}`));
  });

  it("answers 401 for another algorithm, even with the right secret, and for alg none", async () => {
    await expect401(await usage(`Bearer ${await userToken("user_a", { alg: "HS512" })}`));
    const none = new UnsecuredJWT({}).setSubject("user_a").setExpirationTime("1h").encode();
    await expect401(await usage(`Bearer ${none}`));
  });

  it("answers 401 for a token forged with another secret", async () => {
    await expect401(await usage(`Bearer ${await userToken("user_b", { secret: "not-the-secret" })}`));
  });

  it("keeps GET /healthz open", async () => {
    const res = await SELF.fetch("http://api.test/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });
});
