/** REST administration of applications, license keys and their activations. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { activationsAllowed, appName, expiry, filterText, hwid, idParam, limit, memo, offset, supportMessage } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const idParams = v.strictObject({ id: idParam });

export function licenseRoutes(services: Services, session: SessionPlugin) {
  const licensing = services.licensing;
  return new Elysia({ name: "latchkey/http/licenses", prefix: "/api" })
    .use(session)
    .get("/apps", ({ query }) => licensing.listApps(query.limit ?? 100, query.offset ?? 0), {
      query: v.strictObject({ limit, offset }),
      access: "viewer",
      detail: { tags: ["licensing"], summary: "List applications" },
    })
    .post(
      "/apps",
      async ({ body, set, actor }) => {
        const app = await licensing.createApp(actor, { name: body.name, supportMessage: body.support_message ?? "" });
        set.status = 201;
        return app;
      },
      {
        body: v.strictObject({ name: appName, support_message: v.optional(supportMessage) }),
        access: "admin",
        detail: {
          tags: ["licensing"],
          summary: "Create an application",
          description: "The name is unique (ignoring case); the support message goes with every failed activation.",
        },
      },
    )
    .get("/apps/:id", ({ params }) => licensing.getApp(params.id), {
      params: idParams,
      access: "viewer",
      detail: { tags: ["licensing"], summary: "Read an application" },
    })
    .patch(
      "/apps/:id",
      ({ params, body, actor }) => licensing.updateApp(actor, params.id, { name: body.name, supportMessage: body.support_message }),
      {
        params: idParams,
        body: v.strictObject({ name: v.optional(appName), support_message: v.optional(supportMessage) }),
        access: "admin",
        detail: { tags: ["licensing"], summary: "Rename an application or change its support message" },
      },
    )
    .delete(
      "/apps/:id",
      async ({ params, set, actor }) => {
        await licensing.deleteApp(actor, params.id);
        set.status = 204;
      },
      { params: idParams, access: "admin", detail: { tags: ["licensing"], summary: "Delete an application without license keys" } },
    )
    .get(
      "/licenses",
      ({ query, principal }) =>
        licensing.listLicenses(
          { appId: query.app_id, enabled: query.enabled === undefined ? undefined : query.enabled === "true", search: query.q },
          query.limit ?? 100,
          query.offset ?? 0,
          principal.role === "admin",
        ),
      {
        query: v.strictObject({
          app_id: v.optional(idParam),
          enabled: v.optional(v.picklist(["true", "false"], "must be true or false")),
          q: v.optional(filterText(100)),
          limit,
          offset,
        }),
        access: "viewer",
        detail: {
          tags: ["licensing"],
          summary: "List and search license keys",
          description:
            "`q` matches the memo or, for admins, the start of the token. " +
            "Tokens are shown to admins and masked for viewers (whose `q` matches the memo only).",
        },
      },
    )
    .post(
      "/licenses",
      async ({ body, set, actor }) => {
        const license = await licensing.createLicense(actor, {
          appId: body.app_id,
          activations: body.activations ?? 1,
          memo: body.memo ?? "",
          expiresAt: body.expires_at ?? null,
        });
        set.status = 201;
        return license;
      },
      {
        body: v.strictObject({
          app_id: v.pipe(v.number("must be a number"), v.integer("must be a whole number"), v.minValue(1, "must be a positive id")),
          activations: v.optional(activationsAllowed),
          memo: v.optional(memo),
          expires_at: v.optional(expiry),
        }),
        access: "admin",
        detail: {
          tags: ["licensing"],
          summary: "Cut a license key",
          description: "25 characters A-Z0-9 from a CSPRNG. `activations` defaults to 1; -1 = unlimited.",
        },
      },
    )
    .get("/licenses/:id", ({ params, principal }) => licensing.getLicense(params.id, principal.role === "admin"), {
      params: idParams,
      access: "viewer",
      detail: { tags: ["licensing"], summary: "Read a license key with its counters" },
    })
    .patch(
      "/licenses/:id",
      ({ params, body, actor }) =>
        licensing.updateLicense(actor, params.id, {
          enabled: body.enabled,
          memo: body.memo,
          activations: body.activations,
          expiresAt: body.expires_at,
        }),
      {
        params: idParams,
        body: v.strictObject({
          enabled: v.optional(v.boolean("must be true or false")),
          memo: v.optional(memo),
          activations: v.optional(activationsAllowed),
          expires_at: v.optional(v.nullable(expiry)),
        }),
        access: "admin",
        detail: {
          tags: ["licensing"],
          summary: "Enable/disable a key, change its memo, allowance or expiry",
          description: "`expires_at: null` removes the expiry.",
        },
      },
    )
    .delete(
      "/licenses/:id",
      async ({ params, set, actor }) => {
        await licensing.deleteLicense(actor, params.id);
        set.status = 204;
      },
      { params: idParams, access: "admin", detail: { tags: ["licensing"], summary: "Delete a license key and its activations" } },
    )
    .get("/licenses/:id/activations", ({ params }) => licensing.activations(params.id), {
      params: idParams,
      access: "viewer",
      detail: { tags: ["licensing"], summary: "The machines a key is activated on" },
    })
    .delete(
      "/licenses/:id/activations/:hwid",
      async ({ params, set, actor }) => {
        await licensing.removeActivation(actor, params.id, params.hwid);
        set.status = 204;
      },
      {
        params: v.strictObject({ id: idParam, hwid }),
        access: "admin",
        detail: { tags: ["licensing"], summary: "Remove a machine's activation (frees its seat)" },
      },
    );
}
