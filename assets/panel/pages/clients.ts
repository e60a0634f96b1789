/**
 * Clients: the enrolled machines with their presence, filtered by status and group; admins
 * delete one (its key is revoked and it is disconnected). Presence follows `clients.*` live.
 */
import { confirmDialog } from "../dialog.ts";
import { badge, emptyState, h, replace, time, type Child } from "../dom.ts";
import { field, value } from "../forms.ts";
import type { Client, Paged } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepListingFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Presence is pushed; the timer only catches what a dropped socket missed. */
const REFRESH_MS = 30_000;
const STATUS_CHOICES = [
  { value: "", label: "Any" },
  { value: "online", label: "Online" },
  { value: "offline", label: "Offline" },
];

function dash(text: string | null | undefined): Child {
  return text ? text : h("span", { class: "muted" }, "—");
}

function presence(client: Client): HTMLElement {
  return client.online
    ? badge("online", "online", "Connected now")
    : badge("offline", "offline", `Not connected; last seen ${new Date(client.last_seen_at).toISOString()}`);
}

function nameCell(client: Client): HTMLElement {
  return h(
    "span",
    { class: "stacked" },
    h("strong", {}, client.name),
    h("code", { class: "muted small", title: client.uuid, "aria-label": `UUID ${client.uuid}` }, client.uuid.slice(0, 8)),
  );
}

/** The address it connected from, and its interfaces' addresses in the tooltip. */
function addressCell(client: Client): Child {
  const interfaces = client.interfaces.map((i) => `${i.name}: ${i.addresses.join(", ")}`).join("\n");
  if (!client.address && !interfaces) return dash(null);
  return h(
    "span",
    { class: "stacked", title: interfaces || undefined },
    dash(client.address),
    interfaces
      ? h("span", { class: "muted small" }, `${client.interfaces.length} interface${client.interfaces.length === 1 ? "" : "s"}`)
      : null,
  );
}

function deleteClient(ctx: PageContext, client: Client, done: () => void): void {
  confirmDialog({
    title: `Delete client ${client.name}?`,
    message: h(
      "p",
      {},
      client.key_id !== null
        ? "Its key and certificates are revoked and it is disconnected. "
        : "Its certificates are revoked and it is disconnected. ",
      "Its record goes; the machine can enroll again only with a new or reset key (or freely while Require Authentication Key is off).",
    ),
    confirmLabel: "Delete client",
    busyLabel: "Deleting…",
    async action() {
      await ctx.api.delete(`/api/clients/${encodeURIComponent(client.uuid)}`);
      done();
    },
  });
}

registerPage({
  id: "clients",
  title: "Clients",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    const filters = { status: ctx.params.get("status") ?? "", group: ctx.params.get("group") ?? "" };
    if (!STATUS_CHOICES.some((c) => c.value === filters.status)) filters.status = "";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";

    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the clients" },
      field({ name: "status", label: "Status", value: filters.status, choices: STATUS_CHOICES }),
      field({ name: "group", label: "Group", value: filters.group, maxlength: 64, placeholder: "any group" }),
      h(
        "div",
        { class: "filter-buttons" },
        h("button", { type: "submit", class: "primary" }, "Filter"),
        h("button", { type: "button", class: "secondary", onclick: () => clear() }, "Clear"),
      ),
    );
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of clients", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const refreshButton = h("button", { type: "button", class: "secondary", onclick: () => refresher.request() }, "Refresh");
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Clients"), h("div", { class: "head-buttons" }, refreshButton)),
      h(
        "p",
        { class: "lead" },
        "Machines that registered with ",
        h("code", {}, "latchkey client"),
        ". Online and offline update live.",
        admin ? null : " You see the clients of your groups.",
      ),
      form,
      listing,
      pager.element,
    );

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filters.status = value(form, "status");
      filters.group = value(form, "group");
      offset = 0;
      refresher.request();
    });
    form.querySelector("select")?.addEventListener("change", () => form.requestSubmit());
    function clear(): void {
      form.reset();
      for (const control of form.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")) control.value = "";
      filters.status = filters.group = "";
      offset = 0;
      refresher.request();
    }

    const actions = (client: Client) =>
      h(
        "button",
        {
          type: "button",
          class: "link danger-text",
          "aria-label": `Delete client ${client.name}`,
          "data-focus": `delete-${client.uuid}`,
          onclick: () =>
            deleteClient(ctx, client, () => {
              ctx.announce(`Client ${client.name} deleted.`);
              refresher.request();
            }),
        },
        "Delete",
      );

    const filtered = () => Boolean(filters.status || filters.group);

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<Client>>("/api/clients", { ...filters, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ status: filters.status, group: filters.group, offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      const signature = JSON.stringify(list);
      if (signature === rendered) return;
      rendered = signature;
      const table = dataTable(
        "Clients",
        [
          { label: "Status", cell: presence },
          { label: "Name", cell: nameCell, class: "client-name" },
          { label: "Hostname", cell: (c) => dash(c.hostname), class: "hostname" },
          { label: "Group", cell: (c) => (c.group ? badge(c.group, "group") : h("span", { class: "muted" }, "—")) },
          {
            label: "Key",
            cell: (c) =>
              c.key_id === null
                ? h("span", { class: "muted" }, "none")
                : h("a", { href: "#/keys", title: "Its pre-shared key" }, `#${c.key_id}`),
          },
          { label: "Version", cell: (c) => dash(c.version) },
          { label: "OS", cell: (c) => dash(c.os) },
          { label: "Address", cell: addressCell },
          { label: "First seen", cell: (c) => time(c.first_seen_at) },
          { label: "Last seen", cell: (c) => (c.online ? h("span", { class: "online-now" }, "now") : time(c.last_seen_at)) },
          ...(admin ? [{ label: "Actions", cell: actions, class: "actions" }] : []),
        ],
        list.items,
      );
      table.classList.add("table-compact");
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? filtered()
            ? emptyState("No clients match these filters.", "The Clear button shows all clients.")
            : emptyState(
                "No clients yet.",
                admin
                  ? "A machine appears here once it registers: copy a key's install command on the Pre-shared keys page and run it there."
                  : "Clients of your groups appear here once they register.",
              )
          : table,
      ]);
    }

    const refresher = keepListingFresh(ctx, listing, "The clients", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });

    for (const topic of ["clients.online", "clients.offline", "clients.deleted"] as const) ctx.subscribe(topic, () => refresher.request());

    await load();
  },
});
