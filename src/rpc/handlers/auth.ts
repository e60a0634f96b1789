/** `rpc/auth*`: the sysadm login calls (password, token, certificate), plus SCRAM, and `rpc/query`. */
import * as v from "valibot";
import { badRequest, unauthorized } from "../../core/errors.ts";
import { loginPassword, username } from "../../core/fields.ts";
import { defineHandler, type Registry } from "../registry.ts";

export const authHandlers = [
  defineHandler({
    namespace: "rpc",
    name: "auth",
    access: "public",
    args: v.strictObject({ username, password: loginPassword }),
    async handle(ctx, args) {
      const login = await ctx.services.auth.loginWithPassword(args.username, args.password, ctx.address);
      ctx.connection?.signIn(login.principal);
      return [login.token, login.expiresIn];
    },
  }),
  defineHandler({
    namespace: "rpc",
    name: "auth_token",
    access: "public",
    args: v.strictObject({ token: v.pipe(v.string("must be a string"), v.nonEmpty("is required"), v.maxLength(256, "is too long")) }),
    async handle(ctx, args) {
      const principal = await ctx.services.auth.loginWithToken(args.token, ctx.address);
      ctx.connection?.signIn(principal);
      return [args.token, ctx.services.sessions.secondsValid()];
    },
  }),
  defineHandler({
    namespace: "rpc",
    name: "auth_scram",
    access: "public",
    args: v.union(
      [
        v.strictObject({ client_first: v.pipe(v.string("must be a string"), v.maxLength(2048, "is too long")) }),
        v.strictObject({ client_final: v.pipe(v.string("must be a string"), v.maxLength(4096, "is too long")) }),
      ],
      "must be {client_first} or {client_final}",
    ),
    async handle(ctx, args) {
      if ("client_first" in args) {
        const { serverFirst, prehash } = await ctx.services.auth.scramStart(args.client_first, ctx.address);
        return { server_first: serverFirst, prehash };
      }
      const login = await ctx.services.auth.scramFinish(args.client_final, ctx.address);
      ctx.connection?.signIn(login.principal);
      return [login.token, login.expiresIn, login.serverFinal];
    },
  }),
  defineHandler({
    namespace: "rpc",
    name: "auth_ssl",
    access: "public",
    args: v.union(
      [
        v.literal("", 'must be "" (stage 1)'),
        v.strictObject({
          encrypted_string: v.pipe(
            v.string("must be a string"),
            v.nonEmpty("is required"),
            v.maxLength(4096, "is too long (at most 4096 characters)"),
            v.regex(/^[A-Za-z0-9+/_\-\r\n]+={0,2}[\r\n]*$/, "must be base64"),
          ),
        }),
      ],
      'must be "" (stage 1: ask for a test string) or {encrypted_string} (stage 2: its proof, base64)',
    ),
    async handle(ctx, args) {
      const connection = ctx.connection;
      if (!connection) {
        throw badRequest("rpc/auth_ssl needs the WebSocket: its test string is bound to the connection that asked for it", "namespace");
      }
      if (args === "") return { test_string: await ctx.services.auth.certificateChallenge(connection.id, ctx.address) };
      const proof = Buffer.from(args.encrypted_string.replace(/[\r\n]/g, ""), "base64");
      const login = await ctx.services.auth.loginWithCertificate(connection.id, proof, ctx.address);
      connection.signIn(login.principal);
      return [login.token, login.expiresIn];
    },
  }),
  defineHandler({
    namespace: "rpc",
    name: "auth_clear",
    access: "public",
    args: v.unknown(),
    async handle(ctx) {
      // Leave the session first, so that ending it does not close this very connection.
      ctx.connection?.signOut();
      if (ctx.principal) await ctx.services.auth.logout(ctx.principal, ctx.address);
      return "ok";
    },
  }),
];

/** `rpc/query` needs the registry it describes, so it is made after the others. */
export function queryHandler(registry: () => Registry) {
  return defineHandler({
    namespace: "rpc",
    name: "query",
    access: "session",
    args: v.unknown(),
    handle(ctx) {
      if (!ctx.principal) throw unauthorized();
      return registry().query(ctx.principal.role);
    },
  });
}
