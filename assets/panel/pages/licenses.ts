/**
 * License keys (admins and viewers): the keys of every application with their seats and use,
 * filtered and searched; admins cut, enable, disable and delete keys and remove a machine's
 * activation. The list and an open key follow activations live (`licenses.*` events).
 */
import { isAbort } from "../api.ts";
import { LicensingCharts } from "../charts.ts";
import { copyButton } from "../clipboard.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, plural, replace, time, uniqueId, type Child } from "../dom.ts";
import { describeError, field, value, type FieldOptions } from "../forms.ts";
import type { Activation, Application, License, Paged } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepFresh, keepListingFresh, replaceKeepingFocus, type Refresher } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Check counters are not pushed (the server batches them); the list polls for them this often. */
const REFRESH_MS = 5000;
const MAX_QUANTITY = 100;
const ENABLED_CHOICES = [
  { value: "", label: "Any" },
  { value: "true", label: "Enabled" },
  { value: "false", label: "Disabled" },
];

type Status = "enabled" | "disabled" | "expired";

function statusOf(license: License): Status {
  if (!license.enabled) return "disabled";
  if (license.expires_at !== null && Date.parse(license.expires_at) <= Date.now()) return "expired";
  return "enabled";
}

const statusTitles: Record<Status, string> = {
  enabled: "Machines can activate and check this key",
  disabled: "Activations and checks of this key fail",
  expired: "The key is past its expiry date; activations and checks fail",
};

function statusBadge(license: License): HTMLElement {
  const status = statusOf(license);
  return badge(status, status, statusTitles[status]);
}

/** The badge, and the expiry when there is one. */
function statusCell(license: License): HTMLElement {
  const expiry =
    license.expires_at === null
      ? null
      : h("span", { class: "muted small" }, statusOf(license) === "expired" ? "since " : "until ", day(license.expires_at));
  return h("span", { class: "stacked" }, h("span", {}, statusBadge(license)), expiry);
}

/** Total activations and checks, one under the other. */
function usage(license: License): HTMLElement {
  return h(
    "span",
    { class: "stacked usage" },
    h("span", {}, plural(license.total_activations, "activation")),
    h("span", {}, plural(license.total_checks, "check")),
  );
}

/** Expiries are set as days, which start at 00:00 UTC. */
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });

/** An expiry as the day it is set to. */
function day(iso: string): HTMLElement {
  return h("time", { datetime: iso, title: iso }, dayFormat.format(new Date(iso)));
}

/** "1 / 2", "3 / unlimited"; marked when no seat is left. */
function seats(license: License): HTMLElement {
  const unlimited = license.activations === -1;
  const full = !unlimited && license.activations_used >= license.activations;
  return h(
    "span",
    {
      class: full ? "seats seats-full" : "seats",
      title: unlimited ? "Unlimited activations" : `${plural(license.remaining_activations, "seat")} left`,
    },
    `${license.activations_used} / ${unlimited ? "unlimited" : license.activations}`,
  );
}

/** A time with the address it came from underneath. */
function when(at: string | null, address: string | null, options: { seconds?: boolean } = {}): HTMLElement {
  return h("span", { class: "stacked" }, time(at, options), at && address ? h("span", { class: "muted small" }, address) : null);
}

function memoText(memo: string): Child {
  return memo ? memo : h("span", { class: "muted" }, "—");
}

function licensePath(id: number): string {
  return `/api/licenses/${id}`;
}

function machineName(activation: Activation): string {
  return activation.machine ?? activation.hwid;
}

/** A table with less room around its cells. */
function compact(table: HTMLElement): HTMLElement {
  table.classList.add("table-compact");
  return table;
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

/** A dialog that only shows something, closed with Done or Escape; gone when the page is left. */
function infoDialog(
  ctx: PageContext,
  title: string,
  body: Child[],
  focus: { initialFocus?: HTMLElement | undefined; returnFocus?: HTMLElement | null } = {},
): HTMLDialogElement {
  const opener = focus.returnFocus ?? (document.activeElement instanceof HTMLElement ? document.activeElement : null);
  const titleId = uniqueId("dialog-title");
  const done = h("button", { type: "button", class: "primary" }, "Done");
  const dialog = h(
    "dialog",
    { class: "dialog dialog-wide", "aria-labelledby": titleId },
    h("div", { class: "dialog-form" }, h("h2", { id: titleId }, title), ...body, h("div", { class: "dialog-actions" }, done)),
  );
  const close = () => {
    if (dialog.open) dialog.close();
  };
  done.addEventListener("click", close);
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (opener?.isConnected && !document.querySelector("dialog[open]")) opener.focus();
  });
  ctx.signal.addEventListener("abort", close, { once: true });
  document.body.append(dialog);
  dialog.showModal();
  (focus.initialFocus ?? done).focus();
  return dialog;
}

/** The Cut keys dialog: `quantity` keys with the same settings, one POST each. */
function cutKeys(
  ctx: PageContext,
  apps: Application[],
  preselected: number | null,
  done: (app: Application, keys: License[]) => void,
): void {
  const first = apps.find((a) => a.id === preselected) ?? apps[0];
  // The result opens over this dialog as it closes; afterwards the focus goes back to the opener.
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  openFormDialog({
    title: "Cut license keys",
    intro: h(
      "p",
      {},
      "Each key is 25 characters A–Z and 0–9. " +
        "Give it to a customer; their application activates it on up to the allowed number of machines.",
    ),
    submitLabel: "Cut keys",
    busyLabel: "Cutting…",
    fields: [
      field({
        name: "app_id",
        label: "Application",
        value: first ? String(first.id) : "",
        choices: apps.map((a) => ({ value: String(a.id), label: a.name })),
      }),
      h(
        "div",
        { class: "field-row" },
        inputField(
          {
            name: "activations",
            label: "Activations per key",
            value: "1",
            required: true,
            hint: "Machines that may use a key at once; -1 = unlimited.",
          },
          { type: "number", min: "-1", max: "1000000", step: "1", inputmode: "numeric" },
        ),
        inputField(
          { name: "quantity", label: "Quantity", value: "1", required: true, hint: `1 to ${MAX_QUANTITY} keys with these settings.` },
          { type: "number", min: "1", max: String(MAX_QUANTITY), step: "1", inputmode: "numeric" },
        ),
      ),
      field({ name: "memo", label: "Memo", maxlength: 1000, hint: "For your records: customer, order number. Optional." }),
      inputField(
        { name: "expires_at", label: "Expires", hint: "Optional. The keys stop working at 00:00 UTC on this day." },
        { type: "date", min: todayUtc() },
      ),
    ],
    async submit(form) {
      const app = apps.find((a) => String(a.id) === value(form, "app_id"));
      if (!app) throw new Error("choose an application");
      const quantity = Number(value(form, "quantity"));
      const expires = value(form, "expires_at");
      const body = {
        app_id: app.id,
        activations: Number(value(form, "activations")),
        memo: value(form, "memo"),
        ...(expires ? { expires_at: expires } : {}),
      };
      const button = form.querySelector<HTMLButtonElement>('button[type="submit"]');
      const keys: License[] = [];
      try {
        for (let i = 0; i < quantity; i++) {
          if (button && quantity > 1) button.textContent = `Cutting ${i + 1} of ${quantity}…`;
          keys.push(await ctx.api.post<License>("/api/licenses", body));
        }
      } catch (error) {
        // Nothing cut: the error belongs in the form. Some cut: show them, and why the rest failed.
        if (keys.length === 0 || isAbort(error)) throw error;
        done(app, keys);
        showCutKeys(ctx, app, keys, opener, `Stopped after ${keys.length} of ${quantity}: ${describeError(error)}`);
        return;
      }
      done(app, keys);
      showCutKeys(ctx, app, keys, opener);
    },
  });
}

/** The keys just cut, each with its Copy button (and one for all of them). */
function showCutKeys(ctx: PageContext, app: Application, keys: License[], returnFocus: HTMLElement | null, failure?: string): void {
  const copied = (error?: unknown) => {
    if (error) ctx.announce(`Copying failed: ${describeError(error)}`, "error");
  };
  const list = h(
    "ul",
    { class: "token-list", "aria-label": "New license keys" },
    ...keys.map((key) =>
      h("li", {}, h("code", { class: "token" }, key.token), copyButton(key.token, { label: `Copy key #${key.id}`, done: copied })),
    ),
  );
  const allowed = keys[0]?.activations === -1 ? "unlimited activations" : plural(keys[0]?.activations ?? 0, "activation");
  infoDialog(
    ctx,
    `${plural(keys.length, "key")} cut for ${app.name}`,
    [
      failure ? h("p", { class: "form-error", role: "alert" }, failure) : null,
      h("p", { class: "dialog-intro" }, `Each with ${allowed}. They are also in the list, where admins can copy them later.`),
      list,
      keys.length > 1
        ? h(
            "p",
            {},
            copyButton(keys.map((k) => k.token).join("\n"), {
              caption: "Copy all",
              label: `Copy all ${keys.length} keys, one a line`,
              done: copied,
            }),
          )
        : null,
    ],
    { initialFocus: list.querySelector<HTMLElement>("button") ?? undefined, returnFocus },
  );
}

function deleteKey(ctx: PageContext, license: License, done: () => void): void {
  const machines = license.activations_used;
  confirmDialog({
    title: `Delete key #${license.id}?`,
    message: h(
      "p",
      {},
      machines > 0
        ? `${plural(machines, "machine")} activated with it ${machines === 1 ? "loses its" : "lose their"} license at the next check. ` +
            "This cannot be undone."
        : "No machine uses it yet. This cannot be undone.",
    ),
    confirmLabel: "Delete key",
    busyLabel: "Deleting…",
    async action() {
      await ctx.api.delete(licensePath(license.id));
      done();
    },
  });
}

async function setEnabled(ctx: PageContext, license: License, enabled: boolean): Promise<void> {
  try {
    await ctx.api.patch<License>(licensePath(license.id), { enabled });
    ctx.announce(`Key #${license.id} ${enabled ? "enabled" : "disabled"}.`);
  } catch (error) {
    if (!isAbort(error))
      ctx.announce(`Key #${license.id} could not be ${enabled ? "enabled" : "disabled"}. ${describeError(error)}`, "error");
  }
}

/** The details drawer of one key: its facts, the machines it is activated on, and its use over time. */
class KeyDrawer {
  readonly dialog: HTMLDialogElement;
  private readonly body = h("div", { class: "drawer-body", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
  private readonly closeButton = h("button", { type: "button", class: "secondary", "aria-label": "Close the details" }, "Close");
  private readonly usage: LicensingCharts;
  private readonly refresher: Refresher;
  private rendered = "";

  constructor(
    private readonly ctx: PageContext,
    readonly id: number,
    private readonly changed: () => void,
    closed: () => void,
  ) {
    const titleId = uniqueId("drawer-title");
    this.usage = new LicensingCharts(ctx.api, `${licensePath(id)}/stats`, { title: "Use over time", heading: "h3", signal: ctx.signal });
    this.dialog = h(
      "dialog",
      { class: "drawer", "aria-labelledby": titleId },
      h("div", { class: "drawer-head" }, h("h2", { id: titleId }, `Key #${id}`), this.closeButton),
      this.body,
      this.usage.element,
    );
    this.closeButton.addEventListener("click", () => this.close());
    this.dialog.addEventListener("close", () => {
      this.refresher.stop();
      this.usage.destroy();
      this.dialog.remove();
      closed();
    });
    ctx.signal.addEventListener("abort", () => this.close(), { once: true });
    this.refresher = keepFresh(ctx, () => this.load(), { everyMs: REFRESH_MS });
    document.body.append(this.dialog);
    this.dialog.showModal();
    this.closeButton.focus();
    this.refresher.request();
  }

  refresh(): void {
    this.refresher.request();
  }

  close(): void {
    if (this.dialog.open) this.dialog.close();
  }

  private async load(): Promise<void> {
    let license: License;
    let machines: Paged<Activation>;
    try {
      [license, machines] = await Promise.all([
        this.ctx.api.get<License>(licensePath(this.id)),
        this.ctx.api.get<Paged<Activation>>(`${licensePath(this.id)}/activations`),
      ]);
    } catch (error) {
      if (this.ctx.signal.aborted || isAbort(error)) return;
      this.body.removeAttribute("aria-busy");
      this.rendered = "";
      replaceKeepingFocus(
        this.body,
        [h("div", { class: "callout callout-error", role: "alert" }, h("p", {}, `This key could not be loaded. ${describeError(error)}`))],
        this.closeButton,
      );
      return;
    }
    if (!this.dialog.open) return;
    this.body.removeAttribute("aria-busy");
    // Its checks are counted as they happen: the charts follow each load of the key.
    void this.usage.load();
    const signature = JSON.stringify([license, machines, statusOf(license)]);
    if (signature === this.rendered) return;
    this.rendered = signature;
    replaceKeepingFocus(this.body, this.view(license, machines), this.closeButton);
  }

  private view(license: License, machines: Paged<Activation>): Child[] {
    const admin = this.ctx.user.role === "admin";
    const facts = h(
      "dl",
      { class: "facts" },
      ...(
        [
          [
            "Key",
            h(
              "span",
              { class: "token-cell" },
              h("code", { class: "token" }, license.token),
              admin ? copyButton(license.token, { label: `Copy key #${license.id}`, focusKey: "copy" }) : null,
            ),
          ],
          ["Application", license.app_name],
          ["Status", statusBadge(license)],
          ["Seats used", seats(license)],
          ["Memo", memoText(license.memo)],
          ["Expires", license.expires_at === null ? h("span", { class: "muted" }, "never") : day(license.expires_at)],
          ["Created", time(license.created_at)],
          ["Activations", String(license.total_activations)],
          ["Checks", String(license.total_checks)],
          ["Last activation", when(license.last_activation_at, license.last_activation_address, { seconds: true })],
          ["Last check", when(license.last_check_at, license.last_check_address, { seconds: true })],
        ] as [string, Child][]
      ).flatMap(([term, detail]) => [h("dt", {}, term), h("dd", {}, detail)]),
    );
    const remove = (a: Activation) =>
      h(
        "button",
        {
          type: "button",
          class: "link danger-text",
          "aria-label": `Remove the activation of ${machineName(a)}`,
          "data-focus": `remove-${a.hwid}`,
          onclick: () => this.removeActivation(a),
        },
        "Remove",
      );
    return [
      facts,
      h("h3", {}, `Activated machines (${machines.total})`),
      machines.items.length === 0
        ? emptyState("No machine has activated this key yet.")
        : dataTable(
            `Machines activated with key #${license.id}`,
            [
              {
                label: "Machine",
                cell: (a) =>
                  h(
                    "span",
                    { class: "stacked" },
                    a.machine ?? h("span", { class: "muted" }, "unnamed"),
                    h("code", { class: "muted small" }, a.hwid),
                  ),
                class: "machine",
              },
              { label: "User", cell: (a) => a.user ?? h("span", { class: "muted" }, "—"), class: "breakable" },
              { label: "Address", cell: (a) => a.address ?? "" },
              { label: "Activated", cell: (a) => time(a.activated_at) },
              { label: "Last check", cell: (a) => time(a.last_check_at, { seconds: true }) },
              ...(admin ? [{ label: "Actions", cell: remove, class: "actions" }] : []),
            ],
            machines.items,
          ),
    ];
  }

  private removeActivation(activation: Activation): void {
    const name = machineName(activation);
    confirmDialog({
      title: `Remove ${name}?`,
      message: h(
        "p",
        {},
        `This frees its seat on key #${this.id}. ` +
          "The machine fails its next check and has to activate again, which takes a seat if one is free.",
      ),
      confirmLabel: "Remove activation",
      busyLabel: "Removing…",
      action: async () => {
        await this.ctx.api.delete(`${licensePath(this.id)}/activations/${encodeURIComponent(activation.hwid)}`);
        this.ctx.announce(`Activation of ${name} removed from key #${this.id}.`);
        this.refresh();
        this.changed();
      },
    });
  }
}

registerPage({
  id: "licenses",
  title: "License keys",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    const filters = {
      app_id: ctx.params.get("app") ?? "",
      enabled: ctx.params.get("enabled") ?? "",
      q: ctx.params.get("q") ?? "",
    };
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let drawer: KeyDrawer | null = null;
    let rendered = "";

    let apps = (await ctx.api.get<Paged<Application>>("/api/apps", { limit: 1000 })).items;
    if (ctx.signal.aborted) return;

    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the license keys" },
      field({
        name: "app_id",
        label: "Application",
        value: filters.app_id,
        choices: [{ value: "", label: "Any" }, ...apps.map((a) => ({ value: String(a.id), label: a.name }))],
      }),
      field({ name: "enabled", label: "State", value: filters.enabled, choices: ENABLED_CHOICES }),
      field({
        name: "q",
        label: "Search",
        type: "search",
        value: filters.q,
        placeholder: admin ? "start of a key, or memo" : "memo",
        maxlength: 100,
      }),
      h(
        "div",
        { class: "filter-buttons" },
        h("button", { type: "submit", class: "primary" }, "Filter"),
        h("button", { type: "button", class: "secondary", onclick: () => clear() }, "Clear"),
      ),
    );
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of license keys", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const refreshButton = h("button", { type: "button", class: "secondary", onclick: () => refresher.request() }, "Refresh");
    const cutButton = admin ? h("button", { type: "button", class: "primary" }, "Cut keys") : null;
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "License keys"), h("div", { class: "head-buttons" }, refreshButton, cutButton)),
      h(
        "p",
        { class: "lead" },
        "Keys your applications activate with ",
        h("code", {}, "POST /api/activate"),
        " and check with ",
        h("code", {}, "GET /api/check"),
        ". Seats and activations update live; check counts every few seconds.",
      ),
      form,
      listing,
      pager.element,
    );

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filters.app_id = value(form, "app_id");
      filters.enabled = value(form, "enabled");
      filters.q = value(form, "q");
      offset = 0;
      refresher.request();
    });
    function clear(): void {
      form.reset();
      for (const control of form.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")) control.value = "";
      filters.app_id = filters.enabled = filters.q = "";
      offset = 0;
      refresher.request();
    }

    const reflectParams = () =>
      ctx.setParams({ app: filters.app_id, enabled: filters.enabled, q: filters.q, offset: offset || null, key: drawer?.id ?? null });

    const openDetails = (id: number) => {
      drawer?.close();
      const opened = new KeyDrawer(
        ctx,
        id,
        () => refresher.request(),
        () => {
          if (drawer === opened) drawer = null;
          if (ctx.signal.aborted) return;
          reflectParams();
          // The row's Details button may have been re-rendered while the drawer was open.
          const active = document.activeElement;
          if (active === null || active === document.body)
            (listing.querySelector<HTMLElement>(`[data-focus="details-${id}"]`) ?? document.getElementById("page"))?.focus();
        },
      );
      drawer = opened;
      reflectParams();
    };

    cutButton?.addEventListener("click", async () => {
      try {
        apps = (await ctx.api.get<Paged<Application>>("/api/apps", { limit: 1000 })).items;
      } catch (error) {
        if (!isAbort(error)) ctx.announce(`The applications could not be loaded. ${describeError(error)}`, "error");
        return;
      }
      if (apps.length === 0) {
        ctx.announce("Create an application first, on the Applications page.", "error");
        return;
      }
      cutKeys(ctx, apps, filters.app_id ? Number(filters.app_id) : null, (app, keys) => {
        ctx.announce(`${plural(keys.length, "key")} cut for ${app.name}.`);
        refresher.request();
      });
    });

    const actions = (license: License) => {
      const details = h(
        "button",
        {
          type: "button",
          class: "link",
          "aria-label": `Details of key #${license.id}`,
          "data-focus": `details-${license.id}`,
          onclick: () => openDetails(license.id),
        },
        "Details",
      );
      if (!admin) return h("span", { class: "row-actions" }, details);
      const next = !license.enabled;
      return h(
        "span",
        { class: "row-actions" },
        details,
        h(
          "button",
          {
            type: "button",
            class: "link",
            "aria-label": `${next ? "Enable" : "Disable"} key #${license.id}`,
            "data-focus": `toggle-${license.id}`,
            onclick: async () => {
              await setEnabled(ctx, license, next);
              refresher.request();
            },
          },
          next ? "Enable" : "Disable",
        ),
        h(
          "button",
          {
            type: "button",
            class: "link danger-text",
            "aria-label": `Delete key #${license.id}`,
            "data-focus": `delete-${license.id}`,
            onclick: () =>
              deleteKey(ctx, license, () => {
                ctx.announce(`Key #${license.id} deleted.`);
                refresher.request();
              }),
          },
          "Delete",
        ),
      );
    };

    const keyCell = (license: License) =>
      h(
        "span",
        { class: "stacked" },
        h(
          "span",
          { class: "token-cell" },
          h("code", { class: "token", title: admin ? undefined : "Only admins see whole keys" }, license.token),
          admin
            ? copyButton(license.token, {
                label: `Copy key #${license.id}`,
                focusKey: `copy-${license.id}`,
                done: (error) =>
                  ctx.announce(
                    error ? `Copying failed: ${describeError(error)}` : `Key #${license.id} copied.`,
                    error ? "error" : "success",
                  ),
              })
            : null,
        ),
        h("span", { class: "muted small" }, `#${license.id} · ${license.app_name}`),
      );

    const filtered = () => Boolean(filters.app_id || filters.enabled || filters.q);

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<License>>("/api/licenses", { ...filters, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      reflectParams();
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      // A periodic load that found nothing new leaves the table (and any selection in it) alone.
      const signature = JSON.stringify([list, list.items.map(statusOf)]);
      if (signature === rendered) return;
      rendered = signature;
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? filtered()
            ? emptyState(
                "No license keys match these filters.",
                `Search matches ${admin ? "the start of a key or " : ""}any part of the memo; the Clear button shows all keys.`,
              )
            : apps.length === 0
              ? emptyState(
                  "No applications yet.",
                  admin
                    ? "Create an application on the Applications page, then cut keys for it here."
                    : "An admin creates applications and cuts their keys.",
                )
              : emptyState(
                  "No license keys yet.",
                  admin ? "Cut the first keys with the Cut keys button." : "An admin cuts keys for the applications.",
                )
          : compact(
              dataTable(
                "License keys",
                [
                  // The application goes under the key: a separate column would not fit a laptop screen.
                  { label: "Key", cell: keyCell, class: "key" },
                  { label: "Seats", cell: seats, class: "num" },
                  { label: "Status", cell: statusCell },
                  { label: "Memo", cell: (l) => memoText(l.memo), class: "memo" },
                  { label: "Usage", cell: usage },
                  { label: "Last check", cell: (l) => when(l.last_check_at, l.last_check_address) },
                  { label: "Actions", cell: actions, class: "actions" },
                ],
                list.items,
              ),
            ),
      ]);
    }

    /** Loads again (events, the timer, user actions); a failure shows in place of the table. */
    const refresher = keepListingFresh(ctx, listing, "The license keys", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });

    ctx.subscribe("licenses.activated", (event) => {
      refresher.request();
      if (drawer?.id === event.id) drawer.refresh();
    });
    ctx.subscribe("licenses.changed", (event) => {
      refresher.request();
      if (drawer?.id !== event.id) return;
      if (event.change === "deleted") {
        drawer.close();
        ctx.announce(`Key #${event.id} was deleted.`);
      } else drawer.refresh();
    });

    await load();
    const key = Number(ctx.params.get("key"));
    if (Number.isInteger(key) && key > 0) openDetails(key);
  },
});
