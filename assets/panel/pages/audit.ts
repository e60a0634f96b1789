/** Audit log (admins only): who did what, filtered by actor, action and outcome, newest first. */
import { badge, emptyState, h, replace, time } from "../dom.ts";
import { describeError, field, value } from "../forms.ts";
import type { AuditEntry, Paged } from "../model.ts";
import { registerPage } from "../pages.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Suggestions for the action filter; the server records more as features arrive. */
const KNOWN_ACTIONS = [
  "auth.password",
  "auth.scram",
  "auth.legacy",
  "auth.token",
  "auth.logout",
  "user.bootstrap",
  "user.create",
  "user.update",
  "user.passwd",
  "user.delete",
  "user.import",
];
const OUTCOMES = [
  { value: "", label: "Any" },
  { value: "success", label: "success" },
  { value: "failure", label: "failure" },
  { value: "denied", label: "denied" },
];

type Filters = { actor: string; action: string; outcome: string };

registerPage({
  id: "audit",
  title: "Audit log",
  roles: ["admin"],
  async render(container, ctx) {
    const filters: Filters = {
      actor: ctx.params.get("actor") ?? "",
      action: ctx.params.get("action") ?? "",
      outcome: ctx.params.get("outcome") ?? "",
    };
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);

    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the audit log" },
      field({ name: "actor", label: "Actor", type: "search", value: filters.actor, placeholder: "any" }),
      field({ name: "action", label: "Action", type: "search", value: filters.action, placeholder: "any", list: "audit-actions" }),
      field({ name: "outcome", label: "Outcome", value: filters.outcome, choices: OUTCOMES }),
      h(
        "div",
        { class: "filter-buttons" },
        h("button", { type: "submit", class: "primary" }, "Filter"),
        h("button", { type: "button", class: "secondary", onclick: () => clear() }, "Clear"),
      ),
      h("datalist", { id: "audit-actions" }, ...KNOWN_ACTIONS.map((a) => h("option", { value: a }))),
    );
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of the audit log", PAGE_SIZE, (next) => {
      offset = next;
      void show();
    });
    const refresh = h("button", { type: "button", class: "secondary", onclick: () => void show() }, "Refresh");
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Audit log"), refresh),
      h("p", { class: "lead" }, "Sign-ins, account changes and refusals, newest first. Filters match exactly."),
      form,
      listing,
      pager.element,
    );

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filters.actor = value(form, "actor");
      filters.action = value(form, "action");
      filters.outcome = value(form, "outcome");
      offset = 0;
      void show();
    });
    function clear(): void {
      form.reset();
      for (const input of form.querySelectorAll("input")) input.value = "";
      filters.actor = filters.action = filters.outcome = "";
      offset = 0;
      void show();
    }

    const filtered = () => Boolean(filters.actor || filters.action || filters.outcome);

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const log = await ctx.api.get<Paged<AuditEntry>>("/api/audit", { ...filters, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      ctx.setParams({ ...filters, offset: offset || null });
      listing.removeAttribute("aria-busy");
      replace(
        listing,
        log.items.length === 0
          ? filtered()
            ? emptyState("No entries match these filters.", "Filters match whole values: try the Clear button.")
            : emptyState("The audit log is empty.")
          : dataTable(
              "Audit log entries",
              [
                { label: "Time", cell: (e) => time(e.at, { seconds: true }) },
                { label: "Actor", cell: (e) => e.actor ?? h("span", { class: "muted" }, "anonymous") },
                { label: "Action", cell: (e) => h("code", {}, e.action) },
                { label: "Target", cell: (e) => e.target ?? "" },
                { label: "Outcome", cell: (e) => badge(e.outcome, e.outcome) },
                { label: "Address", cell: (e) => e.address ?? "" },
                { label: "Reason", cell: (e) => e.reason ?? "" },
              ],
              log.items,
            ),
      );
      pager.update(offset, log.items.length, log.total);
    }

    /** Loads again after a user action; a failure shows in place of the table. */
    async function show(): Promise<void> {
      try {
        await load();
      } catch (error) {
        if (ctx.signal.aborted) return;
        listing.removeAttribute("aria-busy");
        replace(
          listing,
          h(
            "div",
            { class: "callout callout-error", role: "alert" },
            h("p", {}, `The audit log could not be loaded. ${describeError(error)}`),
          ),
        );
      }
    }

    await load();
  },
});
