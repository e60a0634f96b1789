/**
 * Audit log (admins only): who did what, filtered by actor, action, outcome and time, newest
 * first; the entries that match the filters can be downloaded as JSON lines (the server's export).
 */
import { ApiError, isAbort } from "../api.ts";
import { copyButton } from "../clipboard.ts";
import { badge, emptyState, h, replace, time, type Child } from "../dom.ts";
import { clearErrors, describeError, field, showError, value } from "../forms.ts";
import type { AuditEntry, Paged } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
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
/** A word longer than this (a UUID, a fingerprint, a hardware id) is shown shortened. */
const LONG_WORD = 28;
const SHORT_WORD = 16;

/** `since` and `until` are ISO times, as the API takes them; `until` is exclusive. */
type Filters = { actor: string; action: string; outcome: string; since: string; until: string };
const MINUTE = 60_000;

/** An ISO time as a datetime-local value in this browser's time zone: "2026-01-31T09:05". */
function localInput(iso: string, shiftMs = 0): string {
  const date = new Date(Date.parse(iso) + shiftMs);
  if (Number.isNaN(date.getTime())) return "";
  const two = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}T${two(date.getHours())}:${two(date.getMinutes())}`;
}

/** A datetime-local value (local time) as an ISO time; "" stays "". */
function isoFromInput(local: string, shiftMs = 0): string {
  if (!local) return "";
  const at = new Date(local).getTime();
  return Number.isNaN(at) ? "" : new Date(at + shiftMs).toISOString();
}

function validIso(text: string | null): string {
  return text && !Number.isNaN(Date.parse(text)) ? new Date(text).toISOString() : "";
}

/**
 * An actor, target or reason: a long identifier in it is shortened on screen, with the whole value
 * in its tooltip, for screen readers, and behind a Copy button.
 */
function identifier(text: string | null, ctx: PageContext, absent: Child = ""): Child {
  if (text === null || text === "") return absent;
  const words = text.split(/(\s+)/);
  if (!words.some((word) => word.length > LONG_WORD)) return text;
  const short = words.map((word) => (word.length > LONG_WORD ? `${word.slice(0, SHORT_WORD)}…` : word)).join("");
  return h(
    "span",
    { class: "identifier" },
    h("span", { title: text }, h("span", { "aria-hidden": "true" }, short), h("span", { class: "visually-hidden" }, text)),
    copyButton(text, {
      label: `Copy ${text}`,
      done: (error) => {
        if (error) ctx.announce(`Copying failed: ${describeError(error)}`, "error");
      },
    }),
  );
}

registerPage({
  id: "audit",
  title: "Audit log",
  roles: ["admin"],
  async render(container, ctx) {
    const filters: Filters = {
      actor: ctx.params.get("actor") ?? "",
      action: ctx.params.get("action") ?? "",
      outcome: ctx.params.get("outcome") ?? "",
      since: validIso(ctx.params.get("since")),
      until: validIso(ctx.params.get("until")),
    };
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);

    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the audit log" },
      field({ name: "actor", label: "Actor", type: "search", value: filters.actor, placeholder: "any" }),
      field({ name: "action", label: "Action", type: "search", value: filters.action, placeholder: "any", list: "audit-actions" }),
      field({ name: "outcome", label: "Outcome", value: filters.outcome, choices: OUTCOMES }),
      field({ name: "since", label: "From", type: "datetime-local", value: filters.since && localInput(filters.since) }),
      // The API's `until` is exclusive: To includes its whole minute.
      field({ name: "until", label: "To", type: "datetime-local", value: filters.until && localInput(filters.until, -MINUTE) }),
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
    const exportButton = h(
      "button",
      { type: "button", class: "secondary", title: "Every entry that matches the filters, oldest first, one JSON object a line" },
      "Export JSON lines",
    );
    replace(
      container,
      h("div", { class: "page-head" }, h("h1", {}, "Audit log"), h("div", { class: "head-buttons" }, refresh, exportButton)),
      h(
        "p",
        { class: "lead" },
        "Sign-ins, account changes and refusals, newest first. Actor, action and outcome match exactly. " +
          "Export JSON lines downloads every entry that matches the filters, oldest first.",
      ),
      form,
      listing,
      pager.element,
    );

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearErrors(form);
      const since = isoFromInput(value(form, "since"));
      const until = isoFromInput(value(form, "until"), MINUTE);
      if (since && until && Date.parse(since) >= Date.parse(until)) {
        showError(form, new ApiError(400, "bad_request", "must be later than From", "until"));
        return;
      }
      filters.actor = value(form, "actor");
      filters.action = value(form, "action");
      filters.outcome = value(form, "outcome");
      filters.since = since;
      filters.until = until;
      offset = 0;
      void show();
    });
    function clear(): void {
      form.reset();
      clearErrors(form);
      for (const input of form.querySelectorAll("input")) input.value = "";
      filters.actor = filters.action = filters.outcome = filters.since = filters.until = "";
      offset = 0;
      void show();
    }

    exportButton.addEventListener("click", async () => {
      if (exportButton.getAttribute("aria-disabled") === "true") return;
      exportButton.setAttribute("aria-disabled", "true");
      exportButton.textContent = "Exporting…";
      try {
        const lines = await ctx.api.getBlob("/api/audit", { ...filters, format: "jsonl" });
        const link = h("a", { href: URL.createObjectURL(lines), download: `audit-${new Date().toISOString().slice(0, 10)}.jsonl` });
        container.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
        ctx.announce("The matching entries were exported as JSON lines.");
      } catch (error) {
        if (!ctx.signal.aborted && !isAbort(error)) ctx.announce(`The export failed. ${describeError(error)}`, "error");
      } finally {
        exportButton.removeAttribute("aria-disabled");
        exportButton.textContent = "Export JSON lines";
      }
    });

    const filtered = () => Object.values(filters).some(Boolean);

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
                { label: "Actor", cell: (e) => identifier(e.actor, ctx, h("span", { class: "muted" }, "anonymous")) },
                { label: "Action", cell: (e) => h("code", {}, e.action) },
                { label: "Target", cell: (e) => identifier(e.target, ctx) },
                { label: "Outcome", cell: (e) => badge(e.outcome, e.outcome) },
                { label: "Address", cell: (e) => e.address ?? "" },
                { label: "Reason", cell: (e) => identifier(e.reason, ctx) },
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
