/**
 * Hosts (woodstock seed, SPEC §5): machines that report their interfaces, addresses, port and
 * version to the mutual-TLS listener, signed in by a client certificate from the built-in CA.
 * Admins register a host, download its certificate bundle (key, certificate, rootCA.pem) and
 * remove it, which revokes its certificates; viewers see the hosts of their groups. Reports and
 * certificate changes arrive live (`hosts.changed`, `certificates.changed`).
 */
import { copyButton } from "../clipboard.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, plural, replace, uniqueId, type Child } from "../dom.ts";
import { describeError, field, value } from "../forms.ts";
import type { Host, HostBundleReply, Paged } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepListingFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Going offline is the absence of a report, which nobody pushes: the list polls for it (and for "3 minutes ago"). */
const REFRESH_MS = 30_000;
/** A certificate that runs out sooner than this is flagged: outside clients do not renew their own. */
const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;
/** The mutual-TLS listener's default port (`--mtls-listen`); the panel is not told the one in use. */
const MTLS_DEFAULT_PORT = 9443;
const STATUS_CHOICES = [
  { value: "", label: "Any" },
  { value: "online", label: "Online" },
  { value: "offline", label: "Offline" },
];

function hostPath(hostname: string, action = ""): string {
  return `/api/hosts/${encodeURIComponent(hostname)}${action}`;
}

function dash(text: string | null | undefined): Child {
  return text ? text : h("span", { class: "muted" }, "—");
}

const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["day", 86_400],
  ["hour", 3600],
  ["minute", 60],
] as const;

/** "just now", "3 minutes ago", "2 days ago" (a report a little ahead of this machine's clock is just now). */
function ago(iso: string): string {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (seconds > -45) return "just now";
  const [unit, size] = UNITS.find(([, size]) => -seconds >= size) ?? ["minute", 60];
  return relative.format(Math.round(seconds / size) || -1, unit);
}

/** "expires in 12 days", "expired", or null while more than EXPIRY_WARNING_DAYS are left. */
function expiryWarning(notAfter: string): string | null {
  const left = Date.parse(notAfter) - Date.now();
  if (left <= 0) return "expired";
  if (left >= EXPIRY_WARNING_DAYS * DAY_MS) return null;
  return `expires in ${plural(Math.ceil(left / DAY_MS), "day")}`;
}

function presence(host: Host): HTMLElement {
  if (host.online) return badge("online", "online", "Reporting: its last report is within three report intervals");
  return badge("offline", "offline", host.last_report_at === null ? "It has never reported" : "No report for three report intervals");
}

/** When it last reported (relative, the exact time in the tooltip) and from which address. */
function lastReport(host: Host): Child {
  if (host.last_report_at === null) return h("span", { class: "muted" }, "never");
  return h(
    "span",
    { class: "stacked" },
    h("time", { datetime: host.last_report_at, title: exact.format(new Date(host.last_report_at)) }, ago(host.last_report_at)),
    host.last_address ? h("span", { class: "muted small" }, `from ${host.last_address}`) : null,
  );
}

function service(host: Host): Child {
  if (!host.report) return dash(null);
  return h(
    "span",
    { class: "stacked" },
    h("span", {}, host.report.version),
    h("span", { class: "muted small" }, `port ${host.report.port}`),
  );
}

/**
 * The reported interfaces and their addresses: up to one interface with two addresses inline,
 * more behind a disclosure whose state `expanded` keeps across live re-renders.
 */
function interfacesCell(host: Host, expanded: Set<string>): Child {
  const interfaces = host.report?.interfaces ?? [];
  if (interfaces.length === 0) return dash(null);
  const list = h(
    "ul",
    { class: "interfaces" },
    ...interfaces.map((i) =>
      h(
        "li",
        {},
        h("span", { class: "interface-name" }, i.name),
        " ",
        i.addresses.length ? h("span", { class: "addresses" }, i.addresses.join(", ")) : h("span", { class: "muted" }, "no address"),
      ),
    ),
  );
  const addresses = interfaces.reduce((sum, i) => sum + i.addresses.length, 0);
  if (interfaces.length === 1 && addresses <= 2) return list;
  const details = h(
    "details",
    { class: "interfaces-more", open: expanded.has(host.hostname) },
    h(
      "summary",
      { "data-focus": `interfaces-${host.hostname}` },
      `${plural(interfaces.length, "interface")}, ${plural(addresses, "address", "addresses")}`,
    ),
    list,
  );
  details.addEventListener("toggle", () => {
    if (details.open) expanded.add(host.hostname);
    else expanded.delete(host.hostname);
  });
  return details;
}

/** The serial (short; whole in the tooltip, linked to the Certificates page) and the expiry, flagged when near. */
function certificateCell(host: Host): Child {
  const certificate = host.certificate;
  if (!certificate) return h("span", { class: "muted", title: "No valid certificate: download a bundle to issue one" }, "none");
  const warning = expiryWarning(certificate.not_after);
  const date = h(
    "time",
    { datetime: certificate.not_after, title: exact.format(new Date(certificate.not_after)) },
    dayFormat.format(new Date(certificate.not_after)),
  );
  return h(
    "span",
    { class: "stacked" },
    // Named by what it shows ("Certificate 1a2b3c4d…", the word hidden), so that voice control finds it; the whole serial describes it.
    h(
      "a",
      { href: `#/certificates?hostname=${encodeURIComponent(host.hostname)}`, title: certificate.serial },
      h("span", { class: "visually-hidden" }, "Certificate "),
      h("code", {}, `${certificate.serial.slice(0, 8)}…`),
    ),
    warning ? h("span", { class: "small expiry-soon" }, `${warning} · `, date) : h("span", { class: "muted small" }, "until ", date),
  );
}

/**
 * The curl line a host reports with, run where its bundle's files are. The panel is not told the
 * mutual-TLS listener's port or names, so it assumes the default port on the name it is reached by.
 */
function reportCommand(hostname: string, server = `${location.hostname}:${MTLS_DEFAULT_PORT}`): string {
  return (
    `curl --cert ${hostname}_https.pem --key ${hostname}_https.key --cacert rootCA.pem \\\n` +
    `  -X POST https://${server}/api/hosts/${hostname}/client -H 'content-type: application/json' \\\n` +
    `  -d '{"interfaces":[],"port":0,"version":"curl"}'`
  );
}

/** What a host is and how it reports, for a list with nothing in it yet. */
function noHostsYet(admin: boolean): HTMLElement {
  return h(
    "div",
    { class: "empty empty-guide" },
    h("p", { class: "empty-title" }, "No hosts yet."),
    h(
      "p",
      { class: "muted" },
      "A host is a machine (a web server, a router, anything with curl) that reports its network interfaces, addresses, " +
        "service port and version to latchkey's mutual-TLS listener, proving who it is with a client certificate from this " +
        "server's CA. It is online while its reports keep coming, every minute.",
    ),
    h(
      "p",
      { class: "muted" },
      admin
        ? "Register it with the Register host button, download its bundle (its key, its certificate and rootCA.pem), " +
            "and have it report like this:"
        : "An admin registers hosts and gives each its certificate bundle; a host of your groups then reports like this:",
    ),
    h("pre", { class: "command" }, h("code", {}, reportCommand("web-01.example.com", `SERVER:${MTLS_DEFAULT_PORT}`))),
  );
}

function registerHost(ctx: PageContext, done: (host: Host) => void): void {
  openFormDialog({
    title: "Register host",
    intro: h("p", {}, "The host may then report over mutual TLS once it has a certificate bundle from this server."),
    submitLabel: "Register host",
    busyLabel: "Registering…",
    fields: [
      field({
        name: "hostname",
        label: "Hostname",
        required: true,
        maxlength: 253,
        placeholder: "web-01.example.com",
        hint: "A DNS name (letters, digits, dashes, dots), kept in lower case: the name in its certificate.",
      }),
      field({ name: "group", label: "Group", maxlength: 64, hint: "Optional. Viewers of this group see the host." }),
    ],
    async submit(form) {
      const group = value(form, "group");
      done(await ctx.api.post<Host>("/api/hosts", { hostname: value(form, "hostname"), ...(group ? { group } : {}) }));
    },
  });
}

function removeHost(ctx: PageContext, host: Host, done: () => void): void {
  confirmDialog({
    title: `Remove host ${host.hostname}?`,
    message: h(
      "p",
      {},
      "Its certificates are revoked (reason: cessation of operation) and its connections closed, so it can no longer report. " +
        "Its record and last report are deleted. To bring it back, register it again and give it a new bundle.",
    ),
    confirmLabel: "Remove host",
    busyLabel: "Removing…",
    async action() {
      await ctx.api.delete(hostPath(host.hostname));
      done();
    },
  });
}

/** Asks before issuing: every bundle is a new certificate with a new key. */
function issueBundle(ctx: PageContext, host: Host, returnFocus: () => HTMLElement | null): void {
  openFormDialog({
    title: `Download a bundle for ${host.hostname}?`,
    intro: h(
      "p",
      {},
      `This issues a new client certificate for ${host.hostname}, valid for a year, with a freshly generated private key. ` +
        "Certificates issued before stay valid until they are revoked.",
    ),
    submitLabel: "Issue bundle",
    busyLabel: "Issuing…",
    async submit() {
      const bundle = await ctx.api.post<HostBundleReply>(hostPath(host.hostname, "/bundle"));
      showBundle(ctx, bundle, returnFocus);
    },
  });
}

const FILE_ROLES: [suffix: string, role: string][] = [
  ["_https.key", "private key"],
  ["_https.pem", "certificate"],
  ["rootCA.pem", "root CA"],
];

/**
 * The issued bundle: its three files as downloads (object URLs, released when the dialog closes)
 * and the curl line to try it with. The key is in the server's answer only, so this is the one
 * chance to save it.
 */
function showBundle(ctx: PageContext, bundle: HostBundleReply, returnFocus: () => HTMLElement | null): void {
  const urls: string[] = [];
  const links = Object.entries(bundle.files).map(([name, pem]) => {
    const url = URL.createObjectURL(new Blob([pem], { type: "application/x-pem-file" }));
    urls.push(url);
    const role = FILE_ROLES.find(([suffix]) => name.endsWith(suffix))?.[1] ?? "file";
    return h("li", {}, h("a", { href: url, download: name, class: "download" }, name), h("span", { class: "muted small" }, role));
  });
  const command = reportCommand(bundle.hostname);
  const titleId = uniqueId("dialog-title");
  const done = h("button", { type: "button", class: "primary" }, "Done");
  const dialog = h(
    "dialog",
    { class: "dialog dialog-wide", "aria-labelledby": titleId },
    h(
      "div",
      { class: "dialog-form" },
      h("h2", { id: titleId }, `Bundle for ${bundle.hostname}`),
      h(
        "div",
        { class: "callout key-warning", role: "note" },
        h(
          "p",
          {},
          h("strong", {}, "Download the private key now. "),
          "It is in this answer only: latchkey never stores it, and closing this dialog forgets it. " +
            "Keep it secret (mode 0600); whoever has it can report as this host until its certificate is revoked.",
        ),
      ),
      h(
        "p",
        { class: "dialog-intro" },
        "Certificate ",
        h("code", { title: bundle.serial }, bundle.serial),
        ", valid until ",
        h("time", { datetime: bundle.not_after, title: bundle.not_after }, dayFormat.format(new Date(bundle.not_after))),
        ". Put the three files in the host's configuration directory:",
      ),
      h("ul", { class: "download-list", "aria-label": "Files of the bundle" }, ...links),
      h("h3", {}, "Report with curl"),
      h("pre", { class: "command" }, h("code", {}, command)),
      h(
        "p",
        { class: "hint muted" },
        `Run it where the files are. It assumes the mutual-TLS listener's default port ${MTLS_DEFAULT_PORT} on the name you reach ` +
          "this panel by; change either if the server listens elsewhere (--mtls-listen) or that name is not in its certificate (--san).",
      ),
      h(
        "p",
        {},
        copyButton(command, {
          caption: "Copy the curl command",
          label: "Copy the curl command",
          done: (error) => {
            if (error) ctx.announce(`Copying failed: ${describeError(error)}`, "error");
          },
        }),
      ),
      h("div", { class: "dialog-actions" }, done),
    ),
  );
  const close = () => {
    if (dialog.open) dialog.close();
  };
  done.addEventListener("click", close);
  dialog.addEventListener("close", () => {
    for (const url of urls) URL.revokeObjectURL(url);
    dialog.remove();
    if (!document.querySelector("dialog[open]")) (returnFocus() ?? document.getElementById("page"))?.focus();
  });
  ctx.signal.addEventListener("abort", close, { once: true });
  document.body.append(dialog);
  dialog.showModal();
  dialog.querySelector<HTMLElement>("a.download")?.focus();
}

registerPage({
  id: "hosts",
  title: "Hosts",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    const filters = { status: ctx.params.get("status") ?? "", group: ctx.params.get("group") ?? "" };
    if (!STATUS_CHOICES.some((c) => c.value === filters.status)) filters.status = "";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";
    /** Hosts whose interface list the user opened. */
    const expanded = new Set<string>();

    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the hosts" },
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
    const pager = new Pager("Pages of hosts", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const refreshButton = h("button", { type: "button", class: "secondary", onclick: () => refresher.request() }, "Refresh");
    const registerButton = admin ? h("button", { type: "button", class: "primary" }, "Register host") : null;
    replace(
      container,
      h(
        "div",
        { class: "page-head page-head-wrap" },
        h("h1", {}, "Hosts"),
        h("div", { class: "head-buttons" }, refreshButton, registerButton),
      ),
      h(
        "p",
        { class: "lead" },
        "Machines that report their interfaces, addresses, port and version over mutual TLS with a certificate from this server's CA. " +
          "Reports update live.",
        admin ? null : " You see the hosts of your groups.",
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

    registerButton?.addEventListener("click", () =>
      registerHost(ctx, (host) => {
        ctx.announce(`Host ${host.hostname} registered. Download its bundle to let it report.`);
        refresher.request();
      }),
    );

    /** A row's control by its data-focus key: the row may have been drawn again while a dialog was open. */
    const control = (key: string) => listing.querySelector<HTMLElement>(`[data-focus="${CSS.escape(key)}"]`);
    const actions = (host: Host) =>
      h(
        "span",
        { class: "row-actions" },
        h(
          "button",
          {
            type: "button",
            class: "link",
            "aria-label": `Download bundle for ${host.hostname}`,
            "data-focus": `bundle-${host.hostname}`,
            onclick: () => issueBundle(ctx, host, () => control(`bundle-${host.hostname}`)),
          },
          "Download bundle",
        ),
        h(
          "button",
          {
            type: "button",
            class: "link danger-text",
            "aria-label": `Remove ${host.hostname}`,
            "data-focus": `remove-${host.hostname}`,
            onclick: () =>
              removeHost(ctx, host, () => {
                ctx.announce(`Host ${host.hostname} removed; its certificates are revoked.`);
                refresher.request();
              }),
          },
          "Remove",
        ),
      );

    const filtered = () => Boolean(filters.status || filters.group);

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<Host>>("/api/hosts", { ...filters, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ status: filters.status, group: filters.group, offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      // The relative times and expiry warnings age without the data changing.
      const labels = list.items.map((host) => [
        host.last_report_at && ago(host.last_report_at),
        host.certificate && expiryWarning(host.certificate.not_after),
      ]);
      const signature = JSON.stringify([list, labels]);
      if (signature === rendered) return;
      rendered = signature;
      const table = dataTable(
        "Hosts",
        [
          { label: "Host", cell: (host) => h("strong", {}, host.hostname), class: "host-name" },
          { label: "Status", cell: presence },
          { label: "Group", cell: (host) => (host.group ? badge(host.group, "group") : h("span", { class: "muted" }, "—")) },
          { label: "Last report", cell: lastReport },
          { label: "Version", cell: service },
          { label: "Interfaces", cell: (host) => interfacesCell(host, expanded), class: "interfaces-cell" },
          { label: "Certificate", cell: certificateCell },
          ...(admin ? [{ label: "Actions", cell: actions, class: "actions" }] : []),
        ],
        list.items,
      );
      table.classList.add("table-compact");
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? filtered()
            ? emptyState("No hosts match these filters.", "The Clear button shows all hosts.")
            : noHostsYet(admin)
          : table,
      ]);
    }

    const refresher = keepListingFresh(ctx, listing, "The hosts", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });

    ctx.subscribe("hosts.changed", (event) => {
      if (event.change === "removed") expanded.delete(event.hostname);
      refresher.request();
    });
    // A bundle issued or a certificate revoked changes a host's Certificate column.
    ctx.subscribe("certificates.changed", () => refresher.request());

    await load();
  },
});
