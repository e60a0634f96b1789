/**
 * Certificates (SPEC §5): the built-in CA's root, with its fingerprint, its download and its CRL,
 * and the certificates it issued (hosts' bundles, the mutual-TLS listener's own, clients'),
 * filtered by kind, status and host. Admins revoke a certificate with a reason; viewers see the
 * certificates of their groups' hosts. Issues and revocations arrive live (`certificates.changed`).
 */
import { isAbort } from "../api.ts";
import { copyButton } from "../clipboard.ts";
import { openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, replace, time, uniqueId, type Child } from "../dom.ts";
import { describeError, field, value } from "../forms.ts";
import type { Certificate, CertificateKind, Paged, RevocationReason, RootCertificate } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepListingFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** Expiry is not pushed: the list polls so that a certificate that runs out shows so. */
const REFRESH_MS = 60_000;
/** A certificate that runs out sooner than this is flagged. */
const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

const KIND_LABELS: Record<CertificateKind, string> = {
  host: "Host",
  server: "Server",
  client: "Client",
  user: "User",
};
const KIND_CHOICES = [{ value: "", label: "Any" }, ...Object.entries(KIND_LABELS).map(([kind, label]) => ({ value: kind, label }))];
const STATUS_CHOICES = [
  { value: "", label: "Any" },
  { value: "valid", label: "Valid" },
  { value: "revoked", label: "Revoked" },
];
/** RFC 5280's reasons, as the server names them (`REVOCATION_REASONS`). */
const REASON_LABELS: Record<RevocationReason, string> = {
  unspecified: "Unspecified",
  keyCompromise: "Key compromise",
  affiliationChanged: "Affiliation changed",
  superseded: "Superseded",
  cessationOfOperation: "Cessation of operation",
  privilegeWithdrawn: "Privilege withdrawn",
};

type Status = "valid" | "revoked" | "expired";

function statusOf(certificate: Certificate): Status {
  if (certificate.status === "revoked") return "revoked";
  return certificate.expired ? "expired" : "valid";
}

const statusTitles: Record<Status, string> = {
  valid: "Within its validity period and not revoked",
  revoked: "Refused on every connection, and listed in the CRL",
  expired: "Past its not-after date: refused on every connection",
};

function reasonLabel(reason: string | null): string {
  return reason && Object.hasOwn(REASON_LABELS, reason) ? REASON_LABELS[reason as RevocationReason] : (reason ?? "");
}

const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function day(iso: string): HTMLElement {
  return h("time", { datetime: iso, title: exact.format(new Date(iso)) }, dayFormat.format(new Date(iso)));
}

/** "expires in 12 days" for a valid certificate that runs out within EXPIRY_WARNING_DAYS, else null. */
function expiryWarning(certificate: Certificate): string | null {
  if (statusOf(certificate) !== "valid") return null;
  const left = Date.parse(certificate.not_after) - Date.now();
  if (left >= EXPIRY_WARNING_DAYS * DAY_MS) return null;
  const days = Math.max(1, Math.ceil(left / DAY_MS));
  return `expires in ${days} day${days === 1 ? "" : "s"}`;
}

function serialCell(certificate: Certificate): HTMLElement {
  return h("code", { title: certificate.serial, "aria-label": `Serial ${certificate.serial}` }, `${certificate.serial.slice(0, 8)}…`);
}

/** The common name, and the subject alternative names when they say more. */
function nameCell(certificate: Certificate): HTMLElement {
  const others = certificate.sans.filter((san) => san !== certificate.common_name);
  return h(
    "span",
    { class: "stacked" },
    h("span", {}, certificate.common_name),
    others.length ? h("span", { class: "muted small", title: "Subject alternative names" }, others.join(", ")) : null,
  );
}

function statusCell(certificate: Certificate): HTMLElement {
  const status = statusOf(certificate);
  return h(
    "span",
    { class: "chips" },
    badge(status, status, statusTitles[status]),
    certificate.current_root || status !== "valid"
      ? null
      : badge("old root", "expired", "Issued by a root that was replaced: it no longer verifies"),
  );
}

function notAfterCell(certificate: Certificate): HTMLElement {
  const warning = expiryWarning(certificate);
  return h("span", { class: "stacked" }, day(certificate.not_after), warning ? h("span", { class: "small expiry-soon" }, warning) : null);
}

function revokedCell(certificate: Certificate): Child {
  if (certificate.revoked_at === null) return h("span", { class: "muted" }, "—");
  return h(
    "span",
    { class: "stacked" },
    time(certificate.revoked_at),
    certificate.revocation_reason ? h("span", { class: "muted small" }, reasonLabel(certificate.revocation_reason)) : null,
  );
}

function revokeCertificate(ctx: PageContext, certificate: Certificate, done: () => void): void {
  openFormDialog({
    title: `Revoke certificate ${certificate.serial.slice(0, 8)}…?`,
    intro: h(
      "p",
      {},
      `The ${certificate.kind} certificate for ${certificate.common_name} (serial `,
      h("code", {}, certificate.serial),
      "). Connections made with it are closed at once, it is refused from then on and the CRL lists it. This cannot be undone.",
      certificate.kind === "host" && certificate.hostname ? ` ${certificate.hostname} needs a new bundle to report again.` : null,
    ),
    fields: [
      field({
        name: "reason",
        label: "Reason",
        value: "unspecified",
        choices: Object.entries(REASON_LABELS).map(([reason, label]) => ({ value: reason, label })),
        hint: "Recorded in the CRL and the audit log.",
      }),
    ],
    submitLabel: "Revoke certificate",
    busyLabel: "Revoking…",
    danger: true,
    async submit(form) {
      await ctx.api.post<Certificate>(`/api/certs/${encodeURIComponent(certificate.serial)}/revoke`, { reason: value(form, "reason") });
      done();
    },
  });
}

/** The root CA card: who it is, its fingerprint to pin, its validity, and its files. */
function rootView(root: RootCertificate, ctx: PageContext): Child[] {
  const subject = [root.common_name, root.organization].filter(Boolean).join(", ") || "—";
  const facts: [string, Child][] = [
    ["Subject", subject],
    [
      "SHA-256 fingerprint",
      h(
        "span",
        { class: "fingerprint-cell" },
        h("code", { class: "fingerprint" }, root.fingerprint_colon),
        copyButton(root.fingerprint_colon, {
          label: "Copy the root's SHA-256 fingerprint",
          focusKey: "copy-fingerprint",
          done: (error) =>
            ctx.announce(error ? `Copying failed: ${describeError(error)}` : "Fingerprint copied.", error ? "error" : "success"),
        }),
      ),
    ],
    ["Serial", h("code", { class: "serial" }, root.serial)],
    ["Valid", h("span", {}, day(root.not_before), " to ", day(root.not_after))],
    [
      "Source",
      h("span", {}, root.source === "imported" ? "Imported" : "Generated", " by ", root.created_by, " on ", time(root.created_at)),
    ],
  ];
  return [
    h("dl", { class: "facts root-facts" }, ...facts.flatMap(([term, detail]) => [h("dt", {}, term), h("dd", {}, detail)])),
    h(
      "p",
      { class: "downloads" },
      h("a", { href: "/api/ca.pem", download: "rootCA.pem" }, "Download rootCA.pem"),
      h("a", { href: "/api/crl", download: "latchkey.crl" }, "CRL (DER)"),
      h("a", { href: "/api/crl?format=pem", download: "latchkey-crl.pem" }, "CRL (PEM)"),
    ),
  ];
}

registerPage({
  id: "certificates",
  title: "Certificates",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    const filters = {
      kind: ctx.params.get("kind") ?? "",
      status: ctx.params.get("status") ?? "",
      hostname: ctx.params.get("hostname") ?? "",
    };
    if (!KIND_CHOICES.some((c) => c.value === filters.kind)) filters.kind = "";
    if (!STATUS_CHOICES.some((c) => c.value === filters.status)) filters.status = "";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";
    let rootRendered = "";

    const rootBody = h("div", { "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const rootTitle = uniqueId("root-title");
    const rootCard = h(
      "section",
      { class: "card root-card", "aria-labelledby": rootTitle },
      h("h2", { id: rootTitle }, "Root CA"),
      rootBody,
    );
    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the certificates" },
      field({ name: "kind", label: "Kind", value: filters.kind, choices: KIND_CHOICES }),
      field({ name: "status", label: "Status", value: filters.status, choices: STATUS_CHOICES }),
      field({ name: "hostname", label: "Host", value: filters.hostname, maxlength: 253, placeholder: "any host" }),
      h(
        "div",
        { class: "filter-buttons" },
        h("button", { type: "submit", class: "primary" }, "Filter"),
        h("button", { type: "button", class: "secondary", onclick: () => clear() }, "Clear"),
      ),
    );
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of certificates", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const refreshButton = h("button", { type: "button", class: "secondary", onclick: () => refresher.request() }, "Refresh");
    replace(
      container,
      h("div", { class: "page-head page-head-wrap" }, h("h1", {}, "Certificates"), h("div", { class: "head-buttons" }, refreshButton)),
      h(
        "p",
        { class: "lead" },
        "The built-in certificate authority and what it issued: hosts' bundles, the mutual-TLS listener's own certificate and clients'. " +
          "Clients trust the root; a revoked certificate is refused at once and listed in the CRL.",
        admin ? null : " You see the certificates of your groups' hosts.",
      ),
      rootCard,
      h("h2", {}, "Issued certificates"),
      form,
      listing,
      pager.element,
    );

    for (const select of form.querySelectorAll("select")) select.addEventListener("change", () => form.requestSubmit());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filters.kind = value(form, "kind");
      filters.status = value(form, "status");
      filters.hostname = value(form, "hostname");
      offset = 0;
      refresher.request();
    });
    function clear(): void {
      form.reset();
      for (const control of form.querySelectorAll<HTMLInputElement | HTMLSelectElement>("input, select")) control.value = "";
      filters.kind = filters.status = filters.hostname = "";
      offset = 0;
      refresher.request();
    }

    /** The root card shows its own failure: the list can still be read without it. */
    async function loadRoot(): Promise<void> {
      let root: RootCertificate;
      try {
        root = await ctx.api.get<RootCertificate>("/api/ca");
      } catch (error) {
        if (ctx.signal.aborted || isAbort(error)) return;
        rootRendered = "";
        rootBody.removeAttribute("aria-busy");
        replaceKeepingFocus(rootBody, [
          h(
            "div",
            { class: "callout callout-error", role: "alert" },
            h("p", {}, `The root CA could not be loaded. ${describeError(error)}`),
          ),
        ]);
        return;
      }
      if (ctx.signal.aborted) return;
      rootBody.removeAttribute("aria-busy");
      const signature = JSON.stringify(root);
      if (signature === rootRendered) return;
      rootRendered = signature;
      replaceKeepingFocus(rootBody, rootView(root, ctx));
    }

    const actions = (certificate: Certificate): Child =>
      certificate.status === "revoked"
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "link danger-text",
              "aria-label": `Revoke certificate ${certificate.serial}`,
              "data-focus": `revoke-${certificate.serial}`,
              onclick: () =>
                revokeCertificate(ctx, certificate, () => {
                  ctx.announce(`Certificate ${certificate.serial.slice(0, 8)}… revoked.`);
                  refresher.request();
                }),
            },
            "Revoke",
          );

    const filtered = () => Boolean(filters.kind || filters.status || filters.hostname);

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const list = await ctx.api.get<Paged<Certificate>>("/api/certs", { ...filters, limit: PAGE_SIZE, offset });
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ kind: filters.kind, status: filters.status, hostname: filters.hostname, offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      const signature = JSON.stringify([list, list.items.map(expiryWarning)]);
      if (signature === rendered) return;
      rendered = signature;
      const table = dataTable(
        "Issued certificates",
        [
          { label: "Serial", cell: serialCell },
          { label: "Kind", cell: (c) => KIND_LABELS[c.kind] },
          { label: "Common name", cell: nameCell, class: "host-name" },
          { label: "Host", cell: (c) => c.hostname ?? h("span", { class: "muted" }, "—"), class: "host-name" },
          { label: "Status", cell: statusCell },
          { label: "Not after", cell: notAfterCell },
          { label: "Revoked", cell: revokedCell },
          ...(admin ? [{ label: "Actions", cell: actions, class: "actions" }] : []),
        ],
        list.items,
      );
      table.classList.add("table-compact");
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? filtered()
            ? emptyState("No certificates match these filters.", "The Clear button shows all certificates.")
            : emptyState(
                "No certificates yet.",
                admin
                  ? "Certificates appear here as the CA issues them: download a host's bundle on the Hosts page to issue one."
                  : "Certificates of your groups' hosts appear here once an admin issues them.",
              )
          : table,
      ]);
    }

    const refresher = keepListingFresh(ctx, listing, "The certificates", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });

    // An import of a new root revokes the old root's certificates: the card follows along.
    ctx.subscribe("certificates.changed", () => {
      refresher.request();
      void loadRoot();
    });

    await Promise.all([loadRoot(), load()]);
  },
});
