/** REST for enrollment: the require_auth_key setting, pre-shared keys, and enrolled clients. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { clientUuid, expiry, group, idParam, keyLabel, limit, offset } from "../core/fields.ts";
import { badRequest } from "../core/errors.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const idParams = v.strictObject({ id: idParam });
const requestHost = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$/;
const serverAddress = v.pipe(v.string(), v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$/, "must be HOST:PORT"));

export function enrollmentRoutes(services: Services, session: SessionPlugin, options: { mtlsPort?: () => number | null } = {}) {
  const enrollment = services.enrollment;
  return new Elysia({ name: "latchkey/http/enrollment", prefix: "/api" })
    .use(session)
    .get("/settings", () => enrollment.getSettings(), {
      access: "viewer",
      detail: {
        tags: ["enrollment"],
        summary: "Server settings",
        description: "`require_auth_key`: clients must present a pre-shared key to register.",
      },
    })
    .patch("/settings", ({ body, actor }) => enrollment.updateSettings(actor, body), {
      body: v.strictObject({ require_auth_key: v.optional(v.boolean("must be true or false")) }),
      access: "admin",
      detail: { tags: ["enrollment"], summary: "Change settings", description: "Takes effect for the very next registration; no restart." },
    })
    .get(
      "/keys",
      ({ query, principal }) => enrollment.listKeys(principal, { status: query.status }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({
          status: v.optional(v.picklist(["pending", "active", "revoked"], "must be pending, active or revoked")),
          limit,
          offset,
        }),
        access: "viewer",
        detail: { tags: ["enrollment"], summary: "List pre-shared keys", description: "Viewers see keys of their groups only, masked." },
      },
    )
    .post(
      "/keys",
      async ({ body, set, actor }) => {
        const items = await enrollment.generate(actor, {
          quantity: body.quantity,
          label: body.label ?? "",
          expiresAt: body.expires_at ?? null,
          group: body.group ?? null,
        });
        set.status = 201;
        return { items };
      },
      {
        body: v.strictObject({
          quantity: v.pipe(
            v.number("must be a number"),
            v.integer("must be a whole number"),
            v.minValue(1, "must be 1 to 100"),
            v.maxValue(100, "must be 1 to 100"),
          ),
          label: v.optional(keyLabel),
          expires_at: v.optional(expiry),
          group: v.optional(group),
        }),
        access: "admin",
        detail: {
          tags: ["enrollment"],
          summary: "Generate 1-100 keys",
          description: "XXXX-XXXX-XXXX from an alphabet without 0 O 1 I L; pending until a client registers with one.",
        },
      },
    )
    .get("/keys/:id", ({ params, principal }) => enrollment.getKey(principal, params.id), {
      params: idParams,
      access: "viewer",
      detail: { tags: ["enrollment"], summary: "Read a key" },
    })
    .post("/keys/:id/revoke", ({ params, actor }) => enrollment.revokeKey(actor, params.id), {
      params: idParams,
      access: "admin",
      detail: {
        tags: ["enrollment"],
        summary: "Revoke a key",
        description: "Its bound client is disconnected at once and refused from then on.",
      },
    })
    .post("/keys/:id/reset", ({ params, actor }) => enrollment.resetKey(actor, params.id), {
      params: idParams,
      access: "admin",
      detail: {
        tags: ["enrollment"],
        summary: "Reset a key to pending",
        description: "Clears the binding, e.g. for a reinstalled machine with a new UUID.",
      },
    })
    .delete(
      "/keys/:id",
      async ({ params, set, actor }) => {
        await enrollment.deleteKey(actor, params.id);
        set.status = 204;
      },
      { params: idParams, access: "admin", detail: { tags: ["enrollment"], summary: "Delete a key permanently" } },
    )
    .get(
      "/keys/:id/install-command",
      async ({ params, query, request }) => {
        // The Host header is whatever the request said: it goes into a shell command only in a strict form.
        const host = request.headers.get("host");
        if (query.server === undefined && host !== null && !requestHost.test(host)) {
          throw badRequest("the request's Host header is not a HOST[:PORT]; pass ?server=HOST:PORT", "server");
        }
        return {
          command: await enrollment.installCommand(params.id, {
            server: query.server ?? host ?? "localhost:9000",
            caFingerprint: await services.ca.caFingerprint(),
            mtlsPort: options.mtlsPort?.() ?? null,
          }),
        };
      },
      {
        params: idParams,
        query: v.strictObject({ server: v.optional(serverAddress) }),
        access: "admin",
        detail: {
          tags: ["enrollment"],
          summary: "The install command for a key",
          description:
            "`latchkey client install -server HOST:PORT -ca-fingerprint SHA256 [-mtls-port PORT] -key KEY`, " +
            "with this server's address as the request reached it (or `?server=`), the SHA-256 fingerprint of its root CA " +
            "(the agent enrolls over TLS on the mTLS listener and refuses a server whose root differs) and the mTLS " +
            "listener's port when it is not 9443. The client is named after its machine's hostname unless `-name` is added.",
        },
      },
    )
    .get(
      "/clients",
      ({ query, principal }) =>
        enrollment.listClients(principal, { status: query.status, group: query.group }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({
          status: v.optional(v.picklist(["online", "offline"], "must be online or offline")),
          group: v.optional(group),
          limit,
          offset,
        }),
        access: "viewer",
        detail: { tags: ["enrollment"], summary: "List enrolled clients", description: "Viewers see the clients of their groups only." },
      },
    )
    .get("/clients/:uuid", ({ params, principal }) => enrollment.getClient(principal, params.uuid), {
      params: v.strictObject({ uuid: clientUuid }),
      access: "viewer",
      detail: { tags: ["enrollment"], summary: "Read a client" },
    })
    .delete(
      "/clients/:uuid",
      async ({ params, set, actor }) => {
        await enrollment.deleteClient(actor, params.uuid);
        set.status = 204;
      },
      {
        params: v.strictObject({ uuid: clientUuid }),
        access: "admin",
        detail: { tags: ["enrollment"], summary: "Delete a client", description: "Revokes its key and closes its connection." },
      },
    );
}
