/**
 * Pre-shared keys (woho seed): the Require Authentication Key setting, and the enrollment keys
 * clients register with. Admins generate keys, copy a key's ready-to-run install command, and
 * revoke, reset or delete keys; viewers see the (masked) keys of their groups. The list follows
 * registrations and other admins' changes live (`keys.changed`, `clients.*`, `settings.changed`).
 */
import { isAbort } from "../api.ts";
import { copyButton, copyText } from "../clipboard.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, plural, replace, time, uniqueId, type Child } from "../dom.ts";
import { describeError, field, value, type FieldOptions } from "../forms.ts";
import type { EnrollmentKey, KeyStatus, Paged, Settings } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepListingFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Reconnects of an already bound client are not pushed as key changes; the list polls for them. */
const REFRESH_MS = 30_000;
const MAX_QUANTITY = 100;
const STATUS_CHOICES = [
  { value: "", label: "Any" },
  { value: "pending", label: "Pending" },
  { value: "active", label: "Active" },
  { value: "revoked", label: "Revoked" },
];

const statusTitles: Record<KeyStatus, string> = {
  pending: "Not used yet: the first client that registers with it is bound to it",
  active: "Bound to one client; only that client can register with it",
  revoked: "Nobody can register with it; kept for auditing",
};

function keyPath(id: number, action = ""): string {
  return `/api/keys/${id}${action}`;
}

/** The badge, and a note when an unused key is past its expiry (or when it expires). */
function statusCell(key: EnrollmentKey): HTMLElement {
  const expired = key.expired && key.status === "pending";
  return h(
    "span",
    { class: "stacked" },
    h(
      "span",
      { class: "chips" },
      badge(key.status, key.status, statusTitles[key.status]),
      expired ? badge("expired", "expired", "Past its expiry date: no new client can register with it") : null,
    ),
    key.expires_at !== null && key.status !== "revoked"
      ? h("span", { class: "muted small" }, key.expired ? "expired " : "expires ", time(key.expires_at))
      : null,
  );
}

function clientCell(key: EnrollmentKey): Child {
  if (key.client_uuid === null) return h("span", { class: "muted" }, "—");
  return h(
    "span",
    { class: "stacked" },
    key.client_name
      ? h("a", { href: `#/clients`, class: "client-link", title: key.client_uuid }, key.client_name)
      : h("span", { class: "muted" }, "deleted client"),
    h("code", { class: "muted small", title: key.client_uuid, "aria-label": `UUID ${key.client_uuid}` }, key.client_uuid.slice(0, 8)),
  );
}

/** The label, and the group its clients join underneath. */
function labelCell(key: EnrollmentKey): Child {
  return h(
    "span",
    { class: "stacked" },
    key.label ? h("span", {}, key.label) : h("span", { class: "muted" }, "—"),
    key.group ? h("span", { title: "Clients that enroll with it join this group" }, badge(key.group, "group")) : null,
  );
}

/** Dates in the table without the year, which rarely tells anything there; the tooltip has it all. */
const shortDate = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });

function shortTime(iso: string | null): HTMLElement {
  if (iso === null) return h("span", { class: "muted" }, "never");
  return h("time", { datetime: iso, title: iso }, shortDate.format(new Date(iso)));
}

function usedCell(key: EnrollmentKey): HTMLElement {
  if (key.first_used_at === null) return h("span", { class: "muted" }, "never");
  return h(
    "span",
    { class: "stacked used" },
    h("span", {}, h("span", { class: "muted small" }, "first "), shortTime(key.first_used_at)),
    h("span", {}, h("span", { class: "muted small" }, "last "), shortTime(key.last_used_at)),
  );
}

/** A field() whose input is a number or a date (forms.ts builds text inputs). */
function inputField(options: FieldOptions, attributes: Record<string, string>): HTMLDivElement {
  const wrapper = field(options);
  const input = wrapper.querySelector("input");
  for (const [name, text] of Object.entries(attributes)) input?.setAttribute(name, text);
  return wrapper;
}

function todayUtc(): string {
  return new Date().toISOString().slice(0, 10);
}

function generateKeys(ctx: PageContext, done: (keys: EnrollmentKey[]) => void): void {
  openFormDialog({
    title: "Generate keys",
    intro: h(
      "p",
      {},
      "Each key is XXXX-XXXX-XXXX, without the look-alike characters 0 O 1 I L. " +
        "A key is pending until the first client registers with it; from then on only that client can use it.",
    ),
    submitLabel: "Generate",
    busyLabel: "Generating…",
    fields: [
      inputField(
        { name: "quantity", label: "Quantity", value: "1", required: true, hint: `1 to ${MAX_QUANTITY} keys, one per machine.` },
        { type: "number", min: "1", max: String(MAX_QUANTITY), step: "1", inputmode: "numeric" },
      ),
      field({
        name: "label",
        label: "Label",
        maxlength: 100,
        hint: "Optional, e.g. Customer ABC – batch 1. Each client is named after its machine's hostname.",
      }),
      h(
        "div",
        { class: "field-row" },
        field({ name: "group", label: "Group", maxlength: 64, hint: "Optional. Clients that enroll with these keys join it." }),
        inputField(
          { name: "expires_at", label: "Expires", hint: "Optional. Unused keys stop working at 00:00 UTC on this day." },
          { type: "date", min: todayUtc() },
        ),
      ),
    ],
    async submit(form) {
      const label = value(form, "label");
      const group = value(form, "group");
      const expires = value(form, "expires_at");
      const reply = await ctx.api.post<{ items: EnrollmentKey[] }>("/api/keys", {
        quantity: Number(value(form, "quantity")),
        ...(label ? { label } : {}),
        ...(group ? { group } : {}),
        ...(expires ? { expires_at: expires } : {}),
      });
      done(reply.items);
    },
  });
}

function revokeKey(ctx: PageContext, key: EnrollmentKey, done: () => void): void {
  confirmDialog({
    title: `Revoke key ${key.key}?`,
    message: h(
      "p",
      {},
      key.client_uuid
        ? `${key.client_name ?? "Its client"} is disconnected at once, its certificates are revoked, ` +
            "and it is refused (AUTH_FAILED) when it reconnects. "
        : "No client can register with it any more. ",
      "The record stays for auditing; Reset makes the key usable again.",
    ),
    confirmLabel: "Revoke key",
    busyLabel: "Revoking…",
    async action() {
      await ctx.api.post(keyPath(key.id, "/revoke"));
      done();
    },
  });
}

function resetKey(ctx: PageContext, key: EnrollmentKey, done: () => void): void {
  confirmDialog({
    title: `Reset key ${key.key}?`,
    message: h(
      "p",
      {},
      "The key goes back to pending and its binding is cleared: the next client that registers with it is bound to it. ",
      key.client_uuid ? `${key.client_name ?? "Its client"} is disconnected now. ` : "",
      "Use this for a reinstalled machine (new UUID) or to move the key to another machine.",
    ),
    confirmLabel: "Reset key",
    busyLabel: "Resetting…",
    async action() {
      await ctx.api.post(keyPath(key.id, "/reset"));
      done();
    },
  });
}

function deleteKey(ctx: PageContext, key: EnrollmentKey, done: () => void): void {
  confirmDialog({
    title: `Delete key ${key.key}?`,
    message: h(
      "p",
      {},
      key.client_uuid && key.status === "active"
        ? `${key.client_name ?? "Its client"} is disconnected and can no longer register with it. `
        : "",
      "The key is removed permanently, with no record left in the list. This cannot be undone; Revoke keeps the record.",
    ),
    confirmLabel: "Delete key",
    busyLabel: "Deleting…",
    async action() {
      await ctx.api.delete(keyPath(key.id));
      done();
    },
  });
}

/** The General Settings card: the Require Authentication Key switch (read-only for viewers). */
function settingsCard(ctx: PageContext, initial: Settings): { element: HTMLElement; show(settings: Settings): void } {
  const admin = ctx.user.role === "admin";
  const id = uniqueId("require-auth-key");
  const hintId = `${id}-hint`;
  const input = h("input", { id, type: "checkbox", role: "switch", class: "switch", "aria-describedby": hintId, disabled: !admin });
  const state = h("span", { class: "switch-state", "aria-hidden": "true" });
  const show = (settings: Settings) => {
    input.checked = settings.require_auth_key;
    state.textContent = settings.require_auth_key ? "On" : "Off";
    state.className = `switch-state ${settings.require_auth_key ? "switch-on" : "switch-off"}`;
  };
  show(initial);
  let busy = false;
  input.addEventListener("click", (event) => {
    if (busy) event.preventDefault();
  });
  input.addEventListener("change", async () => {
    const wanted = input.checked;
    busy = true;
    input.setAttribute("aria-busy", "true");
    try {
      const settings = await ctx.api.patch<Settings>("/api/settings", { require_auth_key: wanted });
      show(settings);
      ctx.announce(
        settings.require_auth_key
          ? "Require Authentication Key is on: clients must present a valid key."
          : "Require Authentication Key is off: clients register without a key.",
      );
    } catch (error) {
      if (isAbort(error)) return;
      show({ require_auth_key: !wanted });
      ctx.announce(`The setting could not be changed. ${describeError(error)}`, "error");
    } finally {
      busy = false;
      input.removeAttribute("aria-busy");
    }
  });
  const element = h(
    "section",
    { class: "card settings-card", "aria-label": "General Settings" },
    h("h2", {}, "General Settings"),
    h("div", { class: "switch-row" }, input, h("label", { for: id }, "Require Authentication Key"), state),
    h(
      "p",
      { class: "hint muted", id: hintId },
      "When on, every client must present a valid key to register; when off, clients register freely and any key they send is ignored. " +
        "A change applies to the very next registration.",
      admin ? null : " Only admins change it.",
    ),
  );
  return { element, show };
}

registerPage({
  id: "keys",
  title: "Pre-shared keys",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    let status = ctx.params.get("status") ?? "";
    if (!STATUS_CHOICES.some((c) => c.value === status)) status = "";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";
    /** Install commands by key id: a key's command does not change, so each is fetched once. */
    const commands = new Map<number, string>();

    const settings = settingsCard(ctx, await ctx.api.get<Settings>("/api/settings"));
    if (ctx.signal.aborted) return;

    const filter = h(
      "form",
      { class: "filters filters-inline", role: "search", "aria-label": "Filter the keys" },
      field({ name: "status", label: "Status", value: status, choices: STATUS_CHOICES }),
    );
    const statusSelect = filter.querySelector("select")!;
    statusSelect.addEventListener("change", () => {
      status = statusSelect.value;
      offset = 0;
      refresher.request();
    });
    filter.addEventListener("submit", (event) => event.preventDefault());

    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of keys", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const refreshButton = h("button", { type: "button", class: "secondary", onclick: () => refresher.request() }, "Refresh");
    const generateButton = admin ? h("button", { type: "button", class: "primary" }, "Generate keys") : null;
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Pre-shared keys"), h("div", { class: "head-buttons" }, refreshButton, generateButton)),
      h(
        "p",
        { class: "lead" },
        admin
          ? "Keys that clients present when they register. " +
              "Give each machine owner the install command of one key (the Copy button); they need no access to this panel."
          : "Keys that clients present when they register. " +
              "You see the keys of your groups, masked; admins generate them and hand them out.",
      ),
      settings.element,
      h("div", { class: "section-head" }, h("h2", {}, "Keys"), filter),
      listing,
      pager.element,
    );

    generateButton?.addEventListener("click", () =>
      generateKeys(ctx, (keys) => {
        ctx.announce(`${plural(keys.length, "key")} generated.`);
        refresher.request();
      }),
    );

    const copied = (key: EnrollmentKey) => (error?: unknown) =>
      ctx.announce(
        error ? `Copying failed: ${describeError(error)}` : `Install command for key ${key.key} copied.`,
        error ? "error" : "success",
      );

    /** The Copy button: the command is fetched with the list; if that failed, on click. */
    const copyCell = (key: EnrollmentKey): Child => {
      if (!admin || key.status === "revoked") return null;
      const label = `Copy the install command of key ${key.key}`;
      const command = commands.get(key.id);
      if (command !== undefined) return copyButton(command, { label, focusKey: `copy-${key.id}`, done: copied(key) });
      return h(
        "button",
        {
          type: "button",
          class: "secondary small copy",
          "aria-label": label,
          "data-focus": `copy-${key.id}`,
          onclick: async (event: Event) => {
            const button = event.currentTarget as HTMLButtonElement;
            try {
              const reply = await ctx.api.get<{ command: string }>(keyPath(key.id, "/install-command"));
              commands.set(key.id, reply.command);
              await copyText(reply.command, button.parentElement ?? button);
              copied(key)();
            } catch (error) {
              if (!isAbort(error)) copied(key)(error);
            }
          },
        },
        "Copy",
      );
    };

    const keyCell = (key: EnrollmentKey) =>
      h(
        "span",
        { class: "token-cell" },
        h("code", { class: "token", title: admin ? undefined : "Only admins see whole keys" }, key.key),
        copyCell(key),
      );

    const action = (key: EnrollmentKey, name: string, verb: string, run: () => void, danger = false) =>
      h(
        "button",
        {
          type: "button",
          class: danger ? "link danger-text" : "link",
          "aria-label": `${name} key ${key.key}`,
          "data-focus": `${verb}-${key.id}`,
          onclick: run,
        },
        name,
      );

    const after = (message: string) => () => {
      ctx.announce(message);
      refresher.request();
    };

    const actions = (key: EnrollmentKey) =>
      h(
        "span",
        { class: "row-actions" },
        key.status !== "revoked" ? action(key, "Revoke", "revoke", () => revokeKey(ctx, key, after(`Key ${key.key} revoked.`))) : null,
        key.status !== "pending"
          ? action(key, "Reset", "reset", () => resetKey(ctx, key, after(`Key ${key.key} reset to pending.`)))
          : null,
        action(key, "Delete", "delete", () => deleteKey(ctx, key, after(`Key ${key.key} deleted.`)), true),
      );

    /** Fetches the install commands the rows lack (admins, keys that can still be used). */
    async function loadCommands(keys: EnrollmentKey[]): Promise<void> {
      const missing = keys.filter((k) => k.status !== "revoked" && !commands.has(k.id));
      await Promise.all(
        missing.map(async (k) => {
          try {
            commands.set(k.id, (await ctx.api.get<{ command: string }>(keyPath(k.id, "/install-command"))).command);
          } catch (error) {
            if (isAbort(error)) throw error;
            // The button fetches it on click instead, and shows what goes wrong then.
          }
        }),
      );
    }

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<EnrollmentKey>>("/api/keys", { status, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      if (admin) await loadCommands(list.items);
      if (ctx.signal.aborted) return;
      ctx.setParams({ status, offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      const signature = JSON.stringify([list, list.items.map((k) => commands.has(k.id))]);
      if (signature === rendered) return;
      rendered = signature;
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? status
            ? emptyState(`No ${status} keys.`, "Choose Any to see all keys.")
            : emptyState(
                "No pre-shared keys yet.",
                admin
                  ? "Generate keys with the Generate keys button, then give each machine owner the install command of one key."
                  : "An admin generates keys; you see those of your groups.",
              )
          : h(
              "div",
              { class: "table-compact" },
              dataTable(
                "Pre-shared keys",
                [
                  { label: "Key", cell: keyCell, class: "key" },
                  { label: "Status", cell: statusCell },
                  { label: "Label", cell: labelCell, class: "memo" },
                  { label: "Client", cell: clientCell },
                  { label: "Usage", cell: (k) => String(k.usage_count), class: "num" },
                  { label: "Created", cell: (k) => shortTime(k.created_at) },
                  { label: "Used", cell: usedCell },
                  ...(admin ? [{ label: "Actions", cell: actions, class: "actions" }] : []),
                ],
                list.items,
              ),
            ),
      ]);
    }

    const refresher = keepListingFresh(ctx, listing, "The keys", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });

    ctx.subscribe("keys.changed", (event) => {
      if (event.change === "deleted") for (const id of event.ids) commands.delete(id);
      refresher.request();
    });
    ctx.subscribe("settings.changed", (args) => settings.show(args));
    // A client's name, its reconnects (usage, last used) and its deletion show in the list.
    for (const topic of ["clients.online", "clients.deleted"] as const) ctx.subscribe(topic, () => refresher.request());

    await load();
  },
});
