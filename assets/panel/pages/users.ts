/**
 * Users (admins only): accounts with their role and groups; create, edit, reset password, delete.
 * The bootstrap account is offered neither a role change nor Delete: the server refuses both. Its
 * password is not offered for change while it comes from LATCHKEY_ADMIN_PASSWORD: the server
 * applies the variable at every start and refuses a change through the API.
 */
import { isAbort } from "../api.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, replace, time } from "../dom.ts";
import { describeError, field, splitList, value } from "../forms.ts";
import { ROLES, type Paged, type Role, type User } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
const roleChoices = ROLES.map((r) => ({
  value: r,
  label: r === "admin" ? "admin: full access" : "viewer: read-only, limited to their groups",
}));
const groupsHint = "Comma-separated, e.g. berlin, lab. Viewers see only the clients of these groups.";
const passwordHint = "8 to 1024 characters.";
const passwordFromEnv =
  "LATCHKEY_ADMIN_PASSWORD is applied at every start of the server: to change this password, change the variable and restart the server.";
/** The account the server creates at its first start (BOOTSTRAP_ADMIN in src/core/accounts.ts). */
const BOOTSTRAP_ADMIN = "admin";
const bootstrapNote = "Created at the server's first start: it always stays an admin and cannot be deleted.";

function userPath(username: string): string {
  return `/api/users/${encodeURIComponent(username)}`;
}

function nameCell(user: User, self: string): HTMLElement {
  return h(
    "span",
    { class: "name-cell" },
    h("strong", {}, user.username),
    user.username === self ? h("span", { class: "muted" }, " (you)") : null,
    user.legacy ? badge("wsauth import", "legacy", "Imported from wsauth; the password is still checked through its wsauth hash") : null,
    user.legacy_challenge ? badge("challenge login", "legacy", "Keeps the wsauth hash for the legacy challenge login") : null,
    user.username === BOOTSTRAP_ADMIN ? badge("bootstrap account", "bootstrap", bootstrapNote) : null,
    user.password_from_env
      ? h("span", { class: "env-note", title: passwordFromEnv }, "Password set by ", h("code", {}, "LATCHKEY_ADMIN_PASSWORD"))
      : null,
  );
}

function groupsCell(user: User): HTMLElement {
  if (user.allowed_groups.length > 0) return h("span", { class: "chips" }, ...user.allowed_groups.map((g) => badge(g, "group")));
  return h("span", { class: "muted" }, user.role === "admin" ? "all" : "none");
}

function createUser(ctx: PageContext, done: (username: string) => void): void {
  openFormDialog({
    title: "Create user",
    submitLabel: "Create user",
    busyLabel: "Creating…",
    fields: [
      field({ name: "username", label: "Username", required: true, maxlength: 64, hint: "Letters, digits and . _ @ -" }),
      field({
        name: "password",
        label: "Password",
        type: "password",
        required: true,
        minlength: 8,
        maxlength: 1024,
        autocomplete: "new-password",
        hint: passwordHint,
      }),
      field({ name: "role", label: "Role", value: "viewer", choices: roleChoices }),
      field({ name: "allowed_groups", label: "Groups", hint: groupsHint }),
    ],
    async submit(form) {
      const username = value(form, "username");
      await ctx.api.post<User>("/api/users", {
        username,
        password: (form.elements.namedItem("password") as HTMLInputElement).value,
        role: value(form, "role") as Role,
        allowed_groups: splitList(value(form, "allowed_groups")),
      });
      done(username);
    },
  });
}

function editUser(ctx: PageContext, user: User, done: () => void): void {
  const bootstrap = user.username === BOOTSTRAP_ADMIN;
  openFormDialog({
    title: `Edit ${user.username}`,
    intro: h(
      "div",
      {},
      bootstrap
        ? h("p", {}, `${user.username} is the bootstrap account: it always stays an admin. Its groups apply to its next request.`)
        : h("p", {}, "Role and groups apply to the user's next request; open sessions stay signed in."),
      user.password_from_env
        ? h(
            "p",
            {},
            `The password of ${user.username} is set by `,
            h("code", {}, "LATCHKEY_ADMIN_PASSWORD"),
            " at every start of the server: to change it, change the variable and restart the server.",
          )
        : null,
    ),
    submitLabel: "Save changes",
    busyLabel: "Saving…",
    fields: [
      bootstrap ? null : field({ name: "role", label: "Role", value: user.role, choices: roleChoices }),
      field({ name: "allowed_groups", label: "Groups", value: user.allowed_groups.join(", "), hint: groupsHint }),
    ],
    async submit(form) {
      await ctx.api.patch<User>(userPath(user.username), {
        ...(bootstrap ? {} : { role: value(form, "role") as Role }),
        allowed_groups: splitList(value(form, "allowed_groups")),
      });
      done();
    },
  });
}

function resetPassword(ctx: PageContext, user: User, done: () => void): void {
  const self = user.username === ctx.user.username;
  openFormDialog({
    title: `Reset the password of ${user.username}`,
    intro: h(
      "p",
      {},
      self
        ? "This ends all of your sessions, this one included: you will sign in again with the new password."
        : `This ends all of ${user.username}'s sessions at once.`,
    ),
    submitLabel: "Set password",
    busyLabel: "Setting…",
    fields: [
      field({
        name: "password",
        label: "New password",
        type: "password",
        required: true,
        minlength: 8,
        maxlength: 1024,
        autocomplete: "new-password",
        hint: passwordHint,
      }),
    ],
    async submit(form) {
      await ctx.api.patch<User>(userPath(user.username), { password: (form.elements.namedItem("password") as HTMLInputElement).value });
      done();
    },
  });
}

function deleteUser(ctx: PageContext, user: User, done: () => void): void {
  confirmDialog({
    title: `Delete ${user.username}?`,
    message: h("p", {}, `${user.username} can no longer sign in, and their open sessions end at once. This cannot be undone.`),
    confirmLabel: "Delete user",
    busyLabel: "Deleting…",
    async action() {
      await ctx.api.delete(userPath(user.username));
      done();
    },
  });
}

registerPage({
  id: "users",
  title: "Users",
  roles: ["admin"],
  async render(container, ctx) {
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    const listing = h("div", { class: "listing" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of users", PAGE_SIZE, (next) => {
      offset = next;
      void reload();
    });
    const createButton = h("button", { type: "button", class: "primary" }, "Create user");
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Users"), createButton),
      h(
        "p",
        { class: "lead" },
        "Accounts that may sign in to this panel and the API. Admins manage everything; viewers see only the clients of their groups.",
      ),
      listing,
      pager.element,
    );

    /** Reloads the table after a change; the focus goes back to `focusLabel`'s button in the new rows. */
    const reload = async (message?: string, focusLabel?: string) => {
      if (message) ctx.announce(message);
      try {
        await load();
      } catch (error) {
        if (ctx.signal.aborted || isAbort(error)) return;
        replace(
          listing,
          h("div", { class: "callout callout-error", role: "alert" }, h("p", {}, `The list could not be loaded. ${describeError(error)}`)),
        );
      }
      if (document.activeElement && document.activeElement !== document.body) return;
      const same = focusLabel ? listing.querySelector<HTMLElement>(`[aria-label="${CSS.escape(focusLabel)}"]`) : null;
      (same ?? document.getElementById("page"))?.focus();
    };
    createButton.addEventListener("click", () => createUser(ctx, (name) => void reload(`User ${name} created.`)));

    const actions = (user: User) => {
      const edit = `Edit ${user.username}`;
      const reset = `Reset password of ${user.username}`;
      return h(
        "span",
        { class: "row-actions" },
        h(
          "button",
          {
            type: "button",
            class: "link",
            "aria-label": edit,
            onclick: () => editUser(ctx, user, () => void reload(`${user.username} updated.`, edit)),
          },
          "Edit",
        ),
        user.password_from_env
          ? null
          : h(
              "button",
              {
                type: "button",
                class: "link",
                "aria-label": reset,
                onclick: () => resetPassword(ctx, user, () => void reload(`New password set for ${user.username}.`, reset)),
              },
              "Reset password",
            ),
        user.username === BOOTSTRAP_ADMIN
          ? null
          : h(
              "button",
              {
                type: "button",
                class: "link danger-text",
                "aria-label": `Delete ${user.username}`,
                onclick: () => deleteUser(ctx, user, () => void reload(`User ${user.username} deleted.`)),
              },
              "Delete",
            ),
      );
    };

    async function load(): Promise<void> {
      const list = await ctx.api.get<Paged<User>>("/api/users", { limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ offset: offset || null });
      replace(
        listing,
        list.items.length === 0
          ? emptyState("No users yet.", "Create the first account with the Create user button.")
          : dataTable(
              "Users",
              [
                { label: "Username", cell: (u) => nameCell(u, ctx.user.username), class: "name" },
                { label: "Role", cell: (u) => badge(u.role, u.role) },
                { label: "Groups", cell: groupsCell, class: "groups" },
                { label: "Last login", cell: (u) => time(u.last_login_at) },
                { label: "Created", cell: (u) => time(u.created_at) },
                { label: "Actions", cell: actions, class: "actions" },
              ],
              list.items,
            ),
      );
      pager.update(offset, list.items.length, list.total);
    }

    await load();
  },
});
