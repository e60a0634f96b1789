/**
 * Applications (admins and viewers): the licensed products, each with the support message its
 * failed activations carry and its number of keys; admins create, edit and delete them. Under the
 * list, the checks and activations of the keys of the application chosen there, over time.
 */
import { isAbort } from "../api.ts";
import { LicensingCharts, soon } from "../charts.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { emptyState, h, plural, replace, time, uniqueId } from "../dom.ts";
import { describeError, field, value } from "../forms.ts";
import type { Application, Paged } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** The use over time loads again this often, and a few seconds after activations. */
const USAGE_REFRESH_MS = 15_000;
const nameHint = "Unique; up to 100 characters.";
const supportHint = "Sent with every failed activation of its keys, e.g. “Contact support@example.com”. Optional.";

function appPath(id: number): string {
  return `/api/apps/${id}`;
}

function appFields(app?: Application): HTMLElement[] {
  return [
    field({ name: "name", label: "Name", value: app?.name, required: true, maxlength: 100, hint: nameHint }),
    field({ name: "support_message", label: "Support message", value: app?.support_message, maxlength: 1000, hint: supportHint }),
  ];
}

function createApp(ctx: PageContext, done: (app: Application) => void): void {
  openFormDialog({
    title: "Create application",
    intro: h("p", {}, "License keys belong to an application; its id is the app_id clients may send with activations."),
    submitLabel: "Create application",
    busyLabel: "Creating…",
    fields: appFields(),
    async submit(form) {
      done(await ctx.api.post<Application>("/api/apps", { name: value(form, "name"), support_message: value(form, "support_message") }));
    },
  });
}

function editApp(ctx: PageContext, app: Application, done: (app: Application) => void): void {
  openFormDialog({
    title: `Edit ${app.name}`,
    submitLabel: "Save changes",
    busyLabel: "Saving…",
    fields: appFields(app),
    async submit(form) {
      done(
        await ctx.api.patch<Application>(appPath(app.id), { name: value(form, "name"), support_message: value(form, "support_message") }),
      );
    },
  });
}

function deleteApp(ctx: PageContext, app: Application, done: () => void): void {
  const keys = app.licenses ?? 0;
  confirmDialog({
    title: `Delete ${app.name}?`,
    message: h(
      "p",
      {},
      keys > 0
        ? `It still has ${plural(keys, "license key")}, which would have to go first.`
        : "It has no license keys. This cannot be undone.",
    ),
    confirmLabel: "Delete application",
    busyLabel: "Deleting…",
    async action() {
      await ctx.api.delete(appPath(app.id));
      done();
    },
  });
}

registerPage({
  id: "applications",
  title: "Applications",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));

    // The use over time of the application chosen here, among those of the page shown.
    const chooserId = uniqueId("usage-app");
    const chooser = h("select", { id: chooserId, name: "usage_app" });
    const usage = new LicensingCharts(ctx.api, "", {
      title: "Use over time",
      heading: "h2",
      signal: ctx.signal,
      intro: h(
        "div",
        { class: "usage-chooser" },
        h("label", { for: chooserId }, "Application"),
        chooser,
        h("p", { class: "muted" }, "The checks and activations of all its keys, deleted ones included."),
      ),
    });
    usage.element.hidden = true;
    const usageRefresher = keepFresh(
      ctx,
      async () => {
        if (!usage.element.hidden) await usage.load();
      },
      { everyMs: USAGE_REFRESH_MS },
    );
    const chosenPath = () => `${appPath(Number(chooser.value))}/stats`;
    chooser.addEventListener("change", () => void usage.show(chosenPath()));
    /** Offers the applications of the page; the one chosen stays chosen while it is there. */
    function chooseFrom(apps: Application[]): void {
      const chosen = chooser.value;
      const signature = JSON.stringify(apps.map((a) => [a.id, a.name]));
      if (chooser.dataset.apps !== signature) {
        chooser.dataset.apps = signature;
        replace(chooser, ...apps.map((a) => h("option", { value: String(a.id), selected: String(a.id) === chosen }, a.name)));
      }
      const wasShown = !usage.element.hidden;
      usage.element.hidden = apps.length === 0;
      if (apps.length > 0 && (!wasShown || chooser.value !== chosen)) void usage.show(chosenPath());
    }
    const pager = new Pager("Pages of applications", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const createButton = admin ? h("button", { type: "button", class: "primary" }, "Create application") : null;
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Applications"), createButton),
      h(
        "p",
        { class: "lead" },
        "The software you license. Each application has its own license keys " +
          "and the support message that failed activations show its users.",
      ),
      listing,
      pager.element,
      usage.element,
    );

    createButton?.addEventListener("click", () =>
      createApp(ctx, (app) => {
        ctx.announce(`Application ${app.name} created.`);
        refresher.request();
      }),
    );

    const actions = (app: Application) =>
      h(
        "span",
        { class: "row-actions" },
        h(
          "button",
          {
            type: "button",
            class: "link",
            "aria-label": `Edit ${app.name}`,
            "data-focus": `edit-${app.id}`,
            onclick: () =>
              editApp(ctx, app, (saved) => {
                ctx.announce(`${saved.name} updated.`);
                refresher.request();
              }),
          },
          "Edit",
        ),
        h(
          "button",
          {
            type: "button",
            class: "link danger-text",
            "aria-label": `Delete ${app.name}`,
            "data-focus": `delete-${app.id}`,
            onclick: () =>
              deleteApp(ctx, app, () => {
                ctx.announce(`Application ${app.name} deleted.`);
                refresher.request();
              }),
          },
          "Delete",
        ),
      );

    const keysCell = (app: Application) => {
      const keys = app.licenses ?? 0;
      return keys === 0 ? h("span", { class: "muted" }, "none") : h("a", { href: `#/licenses?app=${app.id}` }, plural(keys, "key"));
    };

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<Application>>("/api/apps", { limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      chooseFrom(list.items);
      const signature = JSON.stringify(list);
      if (signature === rendered) return;
      rendered = signature;
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? emptyState(
              "No applications yet.",
              admin ? "Create the first one with the Create application button." : "An admin creates applications.",
            )
          : dataTable(
              "Applications",
              [
                { label: "ID", cell: (a) => String(a.id), class: "num" },
                { label: "Name", cell: (a) => h("strong", {}, a.name), class: "name" },
                { label: "Support message", cell: (a) => a.support_message || h("span", { class: "muted" }, "—"), class: "memo" },
                { label: "License keys", cell: keysCell },
                { label: "Created", cell: (a) => time(a.created_at) },
                ...(admin ? [{ label: "Actions", cell: actions, class: "actions" }] : []),
              ],
              list.items,
            ),
      ]);
    }

    const refresher = keepFresh(ctx, async () => {
      try {
        await load();
      } catch (error) {
        if (ctx.signal.aborted || isAbort(error)) return;
        listing.removeAttribute("aria-busy");
        rendered = "";
        replaceKeepingFocus(listing, [
          h(
            "div",
            { class: "callout callout-error", role: "alert" },
            h("p", {}, `The applications could not be loaded. ${describeError(error)}`),
          ),
        ]);
      }
    });
    // Key counts change when keys are cut or deleted, here or elsewhere.
    ctx.subscribe("licenses.changed", ({ change }) => {
      if (change === "created" || change === "deleted") refresher.request();
    });
    ctx.subscribe(
      "licenses.activated",
      soon(() => {
        if (!usage.element.hidden) usageRefresher.request();
      }, ctx.signal),
    );

    await load();
  },
});
