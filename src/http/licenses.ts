/** REST administration of applications, license keys and their activations. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { activationsAllowed, appName, expiry, idParam, limit, memo, offset, supportMessage } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import type { Caller } from "./session.ts";

function callerOf(ctx: unknown) {
  const { principal, address } = ctx as Caller;
  return { actor: { name: principal!.username, address }, admin: principal!.role === "admin" };
}

const idParams = v.strictObject({ id: idParam });
const hwidParam = v.pipe(v.string(), v.minLength(1), v.maxLength(255, "must be at most 255 characters"));

export function licenseRoutes(services: Services) {
  const licensing = services.licensing;
  return new Elysia({ name: "latchkey/http/licenses", prefix: "/api" })
    .get("/apps", ({ query }) => licensing.listApps(query.limit ?? 100, query.offset ?? 0), {
      query: v.strictObject({ limit, offset }),
      detail: { tags: ["licensing"], summary: "List applications" },
    })
    .post(
      "/apps",
      ({ body, set, ...ctx }) => {
        set.status = 201;
        return licensing.createApp(callerOf(ctx).actor, { name: body.name, supportMessage: body.support_message ?? "" });
      },
      {
        body: v.strictObject({ name: appName, support_message: v.optional(supportMessage) }),
        detail: { tags: ["licensing"], summary: "Create an application", description: "The name is unique (ignoring case); the support message goes with every failed activation." },
      },
    )
    .get("/apps/:id", ({ params }) => licensing.getApp(params.id), { params: idParams, detail: { tags: ["licensing"], summary: "Read an application" } })
    .patch(
      "/apps/:id",
      ({ params, body, ...ctx }) => licensing.updateApp(callerOf(ctx).actor, params.id, { name: body.name, supportMessage: body.support_message }),
      {
        params: idParams,
        body: v.strictObject({ name: v.optional(appName), support_message: v.optional(supportMessage) }),
        detail: { tags: ["licensing"], summary: "Rename an application or change its support message" },
      },
    )
    .delete(
      "/apps/:id",
      ({ params, set, ...ctx }) => {
        licensing.deleteApp(callerOf(ctx).actor, params.id);
        set.status = 204;
      },
      { params: idParams, detail: { tags: ["licensing"], summary: "Delete an application without license keys" } },
    )
    .get(
      "/licenses",
      ({ query, ...ctx }) =>
        licensing.listLicenses(
          { appId: query.app_id, enabled: query.enabled === undefined ? undefined : query.enabled === "true", search: query.q },
          query.limit ?? 100,
          query.offset ?? 0,
          callerOf(ctx).admin,
        ),
      {
        query: v.strictObject({
          app_id: v.optional(idParam),
          enabled: v.optional(v.picklist(["true", "false"], "must be true or false")),
          q: v.optional(v.pipe(v.string(), v.maxLength(100, "must be at most 100 characters"))),
          limit,
          offset,
        }),
        detail: { tags: ["licensing"], summary: "List and search license keys", description: "`q` matches the memo or, for admins, the start of the token. Tokens are shown to admins and masked for viewers (whose `q` matches the memo only)." },
      },
    )
    .post(
      "/licenses",
      ({ body, set, ...ctx }) => {
        set.status = 201;
        return licensing.createLicense(callerOf(ctx).actor, { appId: body.app_id, activations: body.activations ?? 1, memo: body.memo ?? "", expiresAt: body.expires_at ?? null });
      },
      {
        body: v.strictObject({
          app_id: v.pipe(v.number("must be a number"), v.integer("must be a whole number"), v.minValue(1, "must be a positive id")),
          activations: v.optional(activationsAllowed),
          memo: v.optional(memo),
          expires_at: v.optional(expiry),
        }),
        detail: { tags: ["licensing"], summary: "Cut a license key", description: "25 characters A-Z0-9 from a CSPRNG. `activations` defaults to 1; -1 = unlimited." },
      },
    )
    .get("/licenses/:id", ({ params, ...ctx }) => licensing.getLicense(params.id, callerOf(ctx).admin), {
      params: idParams,
      detail: { tags: ["licensing"], summary: "Read a license key with its counters" },
    })
    .patch(
      "/licenses/:id",
      ({ params, body, ...ctx }) =>
        licensing.updateLicense(callerOf(ctx).actor, params.id, { enabled: body.enabled, memo: body.memo, activations: body.activations, expiresAt: body.expires_at }),
      {
        params: idParams,
        body: v.strictObject({
          enabled: v.optional(v.boolean("must be true or false")),
          memo: v.optional(memo),
          activations: v.optional(activationsAllowed),
          expires_at: v.optional(v.nullable(expiry)),
        }),
        detail: { tags: ["licensing"], summary: "Enable/disable a key, change its memo, allowance or expiry", description: "`expires_at: null` removes the expiry." },
      },
    )
    .delete(
      "/licenses/:id",
      ({ params, set, ...ctx }) => {
        licensing.deleteLicense(callerOf(ctx).actor, params.id);
        set.status = 204;
      },
      { params: idParams, detail: { tags: ["licensing"], summary: "Delete a license key and its activations" } },
    )
    .get("/licenses/:id/activations", ({ params }) => licensing.activations(params.id), {
      params: idParams,
      detail: { tags: ["licensing"], summary: "The machines a key is activated on" },
    })
    .delete(
      "/licenses/:id/activations/:hwid",
      ({ params, set, ...ctx }) => {
        licensing.removeActivation(callerOf(ctx).actor, params.id, params.hwid);
        set.status = 204;
      },
      { params: v.strictObject({ id: idParam, hwid: hwidParam }), detail: { tags: ["licensing"], summary: "Remove a machine's activation (frees its seat)" } },
    );
}
