/** REST accounts: list, create, read, change and delete users (admins only). */
import { Elysia } from "elysia";
import * as v from "valibot";
import { groups, limit, offset, password, role, username } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const params = v.strictObject({ username });

export function userRoutes(services: Services, session: SessionPlugin) {
  const accounts = services.accounts;
  return new Elysia({ name: "latchkey/http/users", prefix: "/api/users" })
    .use(session)
    .get("", ({ query }) => accounts.list(query.limit ?? 100, query.offset ?? 0), {
      access: "admin",
      query: v.strictObject({ limit, offset }),
      detail: { tags: ["users"], summary: "List accounts" },
    })
    .post(
      "",
      async ({ body, set, actor }) => {
        const user = await accounts.create(actor, {
          username: body.username,
          password: body.password,
          role: body.role ?? "viewer",
          allowedGroups: body.allowed_groups ?? [],
        });
        set.status = 201;
        return user;
      },
      {
        access: "admin",
        body: v.strictObject({ username, password, role: v.optional(role), allowed_groups: v.optional(groups) }),
        detail: {
          tags: ["users"],
          summary: "Create an account",
          description: "Role defaults to viewer. Passwords are 8 to 1024 characters.",
        },
      },
    )
    .get("/:username", ({ params }) => accounts.view(params.username), {
      access: "admin",
      params,
      detail: { tags: ["users"], summary: "Read an account" },
    })
    .patch(
      "/:username",
      ({ params, body, actor }) =>
        accounts.change(actor, params.username, { role: body.role, allowedGroups: body.allowed_groups, password: body.password }),
      {
        access: "admin",
        params,
        body: v.strictObject({ role: v.optional(role), allowed_groups: v.optional(groups), password: v.optional(password) }),
        detail: {
          tags: ["users"],
          summary: "Change role, groups or password",
          description: "A new password ends all of the user's sessions, WebSockets included.",
        },
      },
    )
    .delete(
      "/:username",
      async ({ params, set, actor }) => {
        await accounts.delete(actor, params.username);
        set.status = 204;
      },
      {
        access: "admin",
        params,
        detail: {
          tags: ["users"],
          summary: "Delete an account",
          description: "Ends the user's sessions at once. The bootstrap admin cannot be deleted.",
        },
      },
    );
}
