/** The REST mirror of every RPC: `PUT /<namespace>/<name>` with the args as the JSON body. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { badRequest } from "../core/errors.ts";
import type { Services } from "../core/services.ts";
import type { Registry } from "../rpc/registry.ts";
import type { SessionPlugin } from "./session.ts";

const segment = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 letters, digits, _ . -"));

export function rpcMirrorRoutes(services: Services, session: SessionPlugin, registry: Registry) {
  return new Elysia({ name: "latchkey/http/rpc-mirror" }).use(session).put(
    "/:namespace/:name",
    async ({ params, body, principal, address }) => {
      let args: unknown;
      const text = typeof body === "string" ? body : "";
      if (text.trim() !== "") {
        try {
          args = JSON.parse(text);
        } catch {
          throw badRequest("the request body is not valid JSON", "body");
        }
      }
      const result = await registry.dispatch({ services, principal, address, transport: "rest" }, params.namespace, params.name, args);
      return { args: result };
    },
    {
      rpc: true,
      params: v.strictObject({ namespace: segment, name: segment }),
      parse: "text",
      detail: {
        tags: ["rpc"],
        summary: "Call any RPC over REST",
        description:
          'The args go as the JSON body; the reply is `{"args": <result>}`. Example: `PUT /rpc/query`. ' +
          "Login calls (`rpc/auth`) need no token; the rest need `Authorization: Bearer <token>`.",
      },
    },
  );
}
