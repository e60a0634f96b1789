/** `latchkey/users`: the account operations of the REST API, over RPC. */
import * as v from "valibot";
import { groups, password, role, username } from "../../core/fields.ts";
import { defineHandler } from "../registry.ts";

const pageArgs = {
  limit: v.optional(v.pipe(v.number("must be a number"), v.integer("must be whole"), v.minValue(1), v.maxValue(1000)), 100),
  offset: v.optional(v.pipe(v.number("must be a number"), v.integer("must be whole"), v.minValue(0)), 0),
};

export const usersArgs = v.variant(
  "action",
  [
    v.strictObject({ action: v.literal("list"), ...pageArgs }),
    v.strictObject({ action: v.literal("get"), username }),
    v.strictObject({
      action: v.literal("create"),
      username,
      password,
      role: v.optional(role, "viewer"),
      allowed_groups: v.optional(groups, []),
    }),
    v.strictObject({
      action: v.literal("update"),
      username,
      role: v.optional(role),
      allowed_groups: v.optional(groups),
      password: v.optional(password),
    }),
    v.strictObject({ action: v.literal("delete"), username }),
  ],
  "action must be one of list, get, create, update, delete",
);

export const usersHandler = defineHandler({
  namespace: "latchkey",
  name: "users",
  access: "session",
  roles: { read: ["admin"], write: ["admin"] },
  args: usersArgs,
  level: (args) => (args.action === "list" || args.action === "get" ? "read" : "write"),
  async handle(ctx, args) {
    const accounts = ctx.services.accounts;
    const actor = { name: ctx.principal!.username, address: ctx.address };
    switch (args.action) {
      case "list":
        return accounts.list(args.limit, args.offset);
      case "get":
        return accounts.view(args.username);
      case "create":
        return accounts.create(actor, {
          username: args.username,
          password: args.password,
          role: args.role,
          allowedGroups: args.allowed_groups,
        });
      case "update":
        return accounts.change(actor, args.username, { role: args.role, allowedGroups: args.allowed_groups, password: args.password });
      case "delete":
        await accounts.delete(actor, args.username);
        return "ok";
    }
  },
});
