/** `latchkey/licenses`: applications, license keys and activations over RPC. */
import * as v from "valibot";
import { activationsAllowed, appName, expiry, filterText, hwid, memo, rpcPage, supportMessage } from "../../core/fields.ts";
import { defineHandler } from "../registry.ts";

const id = v.pipe(v.number("must be a number"), v.integer("must be a whole number"), v.minValue(1, "must be a positive id"));

export const licensesArgs = v.variant(
  "action",
  [
    v.strictObject({ action: v.literal("list_apps"), ...rpcPage }),
    v.strictObject({ action: v.literal("get_app"), id }),
    v.strictObject({ action: v.literal("create_app"), name: appName, support_message: v.optional(supportMessage, "") }),
    v.strictObject({ action: v.literal("update_app"), id, name: v.optional(appName), support_message: v.optional(supportMessage) }),
    v.strictObject({ action: v.literal("delete_app"), id }),
    v.strictObject({
      action: v.literal("list"),
      app_id: v.optional(id),
      enabled: v.optional(v.boolean("must be true or false")),
      q: v.optional(filterText(100)),
      ...rpcPage,
    }),
    v.strictObject({ action: v.literal("get"), id }),
    v.strictObject({
      action: v.literal("create"),
      app_id: id,
      activations: v.optional(activationsAllowed, 1),
      memo: v.optional(memo, ""),
      expires_at: v.optional(expiry),
    }),
    v.strictObject({
      action: v.literal("update"),
      id,
      enabled: v.optional(v.boolean("must be true or false")),
      memo: v.optional(memo),
      activations: v.optional(activationsAllowed),
      expires_at: v.optional(v.nullable(expiry)),
    }),
    v.strictObject({ action: v.literal("delete"), id }),
    v.strictObject({ action: v.literal("activations"), id }),
    v.strictObject({ action: v.literal("remove_activation"), id, hwid }),
  ],
  "action must be one of list_apps, get_app, create_app, update_app, delete_app, " +
    "list, get, create, update, delete, activations, remove_activation",
);

const READS = new Set(["list_apps", "get_app", "list", "get", "activations"]);

export const licensesHandler = defineHandler({
  namespace: "latchkey",
  name: "licenses",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: licensesArgs,
  level: (args) => (READS.has(args.action) ? "read" : "write"),
  async handle(ctx, args) {
    const licensing = ctx.services.licensing;
    const principal = ctx.principal!;
    const actor = { name: principal.username, address: ctx.address };
    const admin = principal.role === "admin";
    switch (args.action) {
      case "list_apps":
        return licensing.listApps(args.limit, args.offset);
      case "get_app":
        return licensing.getApp(args.id);
      case "create_app":
        return licensing.createApp(actor, { name: args.name, supportMessage: args.support_message });
      case "update_app":
        return licensing.updateApp(actor, args.id, { name: args.name, supportMessage: args.support_message });
      case "delete_app":
        await licensing.deleteApp(actor, args.id);
        return "ok";
      case "list":
        return licensing.listLicenses({ appId: args.app_id, enabled: args.enabled, search: args.q }, args.limit, args.offset, admin);
      case "get":
        return licensing.getLicense(args.id, admin);
      case "create":
        return licensing.createLicense(actor, {
          appId: args.app_id,
          activations: args.activations,
          memo: args.memo,
          expiresAt: args.expires_at ?? null,
        });
      case "update":
        return licensing.updateLicense(actor, args.id, {
          enabled: args.enabled,
          memo: args.memo,
          activations: args.activations,
          expiresAt: args.expires_at,
        });
      case "delete":
        await licensing.deleteLicense(actor, args.id);
        return "ok";
      case "activations":
        return licensing.activations(args.id);
      case "remove_activation":
        await licensing.removeActivation(actor, args.id, args.hwid);
        return "ok";
    }
  },
});
