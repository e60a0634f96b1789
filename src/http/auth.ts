/** REST login, logout, SCRAM and the opt-in wsauth challenge. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { badRequest } from "../core/errors.ts";
import { loginPassword, username } from "../core/fields.ts";
import type { Login } from "../core/auth.ts";
import type { Services } from "../core/services.ts";
import { clearedCookie, csrfToken, sessionCookie } from "./session.ts";
import type { SessionPlugin } from "./session.ts";

const loginBody = v.strictObject({
  username,
  password: v.optional(loginPassword),
  /** wsauth challenge login (with --legacy-challenge-login): nonce from /api/auth/challenge. */
  nonce: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-f]{32}$/, "must be the 32 hex digits from /api/auth/challenge"))),
  response: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{64}$/, "must be 64 hex digits: SHA256(hash + nonce)"))),
  /** Ask for the panel's HttpOnly session cookie (and a CSRF token) as well as the token. */
  cookie: v.optional(v.boolean("must be true or false")),
});

const loginReply = v.object({
  /** Absent when the session went into the panel's cookie. */
  token: v.optional(v.string()),
  role: v.picklist(["admin", "viewer"]),
  expires_in: v.number(),
  csrf_token: v.optional(v.string()),
});

export function authRoutes(services: Services, session: SessionPlugin, options: { tls: boolean }) {
  const reply = (
    login: Login,
    cookie: boolean | undefined,
    set: { headers: Record<string, string | number> },
  ): v.InferOutput<typeof loginReply> => {
    if (!cookie) return { token: login.token, role: login.role, expires_in: login.expiresIn };
    // The token stays in the HttpOnly cookie: page script never sees a bearer token it could leak.
    set.headers["set-cookie"] = sessionCookie(login.token, services.sessions.limits.absoluteSeconds, options.tls);
    return { role: login.role, expires_in: login.expiresIn, csrf_token: csrfToken(services.secret, login.sessionId) };
  };

  return new Elysia({ name: "latchkey/http/auth", prefix: "/api/auth" })
    .use(session)
    .post(
      "/login",
      async ({ body, set, address }) => {
        let login: Login;
        if (body.password !== undefined) {
          login = await services.auth.loginWithPassword(body.username, body.password, address);
        } else if (body.nonce !== undefined && body.response !== undefined) {
          login = await services.auth.loginWithLegacyResponse(body.username, body.nonce, body.response, address);
        } else {
          throw badRequest("password is required (or nonce and response for the wsauth challenge)", "password");
        }
        return reply(login, body.cookie, set);
      },
      {
        public: true,
        body: loginBody,
        response: { 200: loginReply },
        detail: {
          tags: ["auth"],
          summary: "Log in with a password",
          description:
            "Returns an opaque bearer token valid for `expires_in` seconds of inactivity (and at most the absolute session lifetime). " +
            "Failed logins are throttled per account and per address (429 with Retry-After).",
        },
      },
    )
    .post(
      "/logout",
      async ({ set, principal, address }) => {
        await services.auth.logout(principal, address);
        set.headers["set-cookie"] = clearedCookie(options.tls);
        return { ok: true };
      },
      { access: "session", detail: { tags: ["auth"], summary: "End the current session" } },
    )
    .get(
      "/session",
      ({ principal: p, viaCookie }) => {
        return {
          username: p.username,
          role: p.role,
          allowed_groups: p.groups,
          expires_in: services.sessions.secondsValid(),
          ...(viaCookie ? { csrf_token: csrfToken(services.secret, p.sessionId) } : {}),
        };
      },
      { access: "session", detail: { tags: ["auth"], summary: "Who am I: the current session's user and role" } },
    )
    .post(
      "/scram/start",
      async ({ body, address }) => {
        const { serverFirst, prehash } = await services.auth.scramStart(body.client_first, address);
        return { server_first: serverFirst, prehash };
      },
      {
        public: true,
        body: v.strictObject({ client_first: v.pipe(v.string(), v.nonEmpty("is required"), v.maxLength(2048, "is too long")) }),
        detail: {
          tags: ["auth"],
          summary: "SCRAM-SHA-256 step 1",
          description:
            "Send the client-first message (`n,,n=USER,r=NONCE`); get the server-first message. " +
            "When `prehash` is set (accounts imported from wsauth) the SCRAM password is lowercase hex SHA256(password + prehash.salt).",
        },
      },
    )
    .post(
      "/scram/finish",
      async ({ body, set, address }) => {
        const login = await services.auth.scramFinish(body.client_final, address);
        return { ...reply(login, body.cookie, set), server_final: login.serverFinal };
      },
      {
        public: true,
        body: v.strictObject({
          client_final: v.pipe(v.string(), v.nonEmpty("is required"), v.maxLength(4096, "is too long")),
          cookie: v.optional(v.boolean()),
        }),
        detail: {
          tags: ["auth"],
          summary: "SCRAM-SHA-256 step 2",
          description: "Send the client-final message; get a session token and the server-final message (`v=...`) to verify the server.",
        },
      },
    )
    .post("/challenge", ({ body, address }) => services.auth.legacyChallenge(body.username, address), {
      public: true,
      body: v.strictObject({ username }),
      detail: {
        tags: ["auth"],
        summary: "wsauth nonce challenge (needs --legacy-challenge-login)",
        description:
          "Returns a single-use nonce (30 s) and the account's wsauth salt. " +
          "Log in with `POST /api/auth/login {username, nonce, response}` where response = SHA256(SHA256(password+salt) + nonce).",
      },
    });
}
