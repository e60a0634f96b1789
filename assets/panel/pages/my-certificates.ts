/**
 * My certificates (every signed-in user; admins see everyone's): the certificates a user signs in
 * with instead of a password (sysadm `rpc/auth_ssl`). Register one by pasting its PEM (a
 * certificate of this server's CA; admins may also register self-signed ones, for anyone); have
 * the CA issue one, registered at once, for a pasted certificate request (admins may leave it out:
 * a key is then generated and shown this once); and revoke one, with a confirmation. The server
 * decides who may do what; the page offers what fits. What the CA issues arrives live
 * (`certificates.changed`, pushed to admins); a timer catches the rest (registrations elsewhere).
 */
import { copyButton } from "../clipboard.ts";
import { confirmDialog, openFormDialog } from "../dialog.ts";
import { badge, emptyState, h, replace, time, uniqueId, type Child } from "../dom.ts";
import { describeError, field, value } from "../forms.ts";
import type { Paged, UserCertificate } from "../model.ts";
import { registerPage, type PageContext } from "../pages.ts";
import { keepListingFresh, replaceKeepingFocus } from "../refresh.ts";
import { dataTable, Pager } from "../table.ts";

const PAGE_SIZE = 50;
/** What the CA issues is pushed (to admins); the timer catches registrations and revocations, which are not. */
const REFRESH_MS = 30_000;
const DEFAULT_DAYS = 365;
/** How a user makes a key and a request for it, on their own machine. */
const CSR_COMMAND = "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\\n  -keyout me.key -subj /CN=me -out me.csr";

/** `POST /api/users/{username}/certificates/issue`: the registration, the root and, when generated, the key (in this reply only). */
type IssuedCertificate = UserCertificate & { certificate: string; ca: string; key?: string };
const STATUS_CHOICES = [
  { value: "active", label: "Active" },
  { value: "revoked", label: "Revoked" },
  { value: "any", label: "Any" },
];

function certificatesPath(username: string): string {
  return `/api/users/${encodeURIComponent(username)}/certificates`;
}

/** Its subject, and the nickname it was registered with. */
function nameCell(certificate: UserCertificate): HTMLElement {
  return h(
    "span",
    { class: "stacked" },
    h("span", {}, certificate.subject ?? "(no common name)"),
    certificate.nickname ? h("span", { class: "muted small" }, certificate.nickname) : null,
  );
}

function issuerCell(certificate: UserCertificate): HTMLElement {
  if (certificate.self_signed) return badge("self-signed", "legacy", "Registered by an admin; valid until it expires or is revoked here");
  if (certificate.ca_serial) return badge("this server's CA", "valid", `Serial ${certificate.ca_serial}: the CA's revocation applies too`);
  return h("span", {}, certificate.issuer ?? "—");
}

function fingerprintCell(certificate: UserCertificate): HTMLElement {
  const fingerprint = certificate.fingerprint ?? certificate.key_id;
  return h("code", { title: fingerprint, "aria-label": `Fingerprint ${fingerprint}` }, `${fingerprint.slice(0, 16)}…`);
}

function statusCell(certificate: UserCertificate): HTMLElement {
  if (certificate.status === "revoked") {
    return h(
      "span",
      { class: "stacked" },
      badge("revoked", "revoked", "It no longer signs in"),
      certificate.revoked_at ? h("span", { class: "muted small" }, time(certificate.revoked_at), ` by ${certificate.revoked_by}`) : null,
    );
  }
  if (certificate.expired) return badge("expired", "expired", "Past its not-after date: it no longer signs in");
  return badge("active", "active", "Signs in with rpc/auth_ssl");
}

function registerCertificate(ctx: PageContext, done: (username: string) => void): void {
  const admin = ctx.user.role === "admin";
  openFormDialog({
    title: "Register a certificate",
    intro: h(
      "p",
      {},
      "Paste the certificate (PEM). Its private key then signs in without a password, through rpc/auth_ssl. ",
      admin
        ? "A certificate of this server's CA must be valid and not revoked; a self-signed one is accepted from admins."
        : "It must be a valid certificate of this server's CA; ask an admin to register a self-signed one.",
    ),
    submitLabel: "Register certificate",
    busyLabel: "Registering…",
    fields: [
      admin
        ? field({ name: "user", label: "User", value: ctx.user.username, required: true, maxlength: 64, hint: "Whose certificate it is." })
        : null,
      field({
        name: "certificate",
        label: "Certificate (PEM)",
        rows: 8,
        required: true,
        maxlength: 65536,
        placeholder: "-----BEGIN CERTIFICATE-----",
      }),
      field({ name: "nickname", label: "Nickname", maxlength: 64, hint: "Optional: which device or key this is." }),
      field({ name: "email", label: "E-mail", maxlength: 254, hint: "Optional." }),
    ],
    async submit(form) {
      const username = admin ? value(form, "user") : ctx.user.username;
      const nickname = value(form, "nickname");
      const email = value(form, "email");
      await ctx.api.post<UserCertificate>(certificatesPath(username), {
        certificate: value(form, "certificate"),
        ...(nickname ? { nickname } : {}),
        ...(email ? { email } : {}),
      });
      done(username);
    },
  });
}

function issueCertificate(ctx: PageContext, done: (issued: IssuedCertificate, returnFocus: () => HTMLElement | null) => void): void {
  const admin = ctx.user.role === "admin";
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  openFormDialog({
    title: "Issue a certificate",
    intro: h(
      "div",
      {},
      h(
        "p",
        {},
        "This server's CA issues a user certificate (its name is the user's, for signing in only) and registers it at once: " +
          "its private key then signs in without a password, through rpc/auth_ssl. ",
        admin
          ? "Paste a certificate request for a key the user keeps, or leave it empty to have a key generated here: " +
              "it is shown this once and stored nowhere."
          : "Paste a certificate request for a key you keep: the server never makes your private key. On your machine:",
      ),
      admin ? null : h("pre", { class: "command" }, h("code", {}, CSR_COMMAND)),
    ),
    submitLabel: "Issue certificate",
    busyLabel: "Issuing…",
    fields: [
      admin
        ? field({ name: "user", label: "User", value: ctx.user.username, required: true, maxlength: 64, hint: "Whose certificate it is." })
        : null,
      field({
        name: "csr",
        label: "Certificate request (PEM)",
        rows: 6,
        required: !admin,
        maxlength: 16384,
        placeholder: "-----BEGIN CERTIFICATE REQUEST-----",
        hint: admin ? "Optional: without one, a P-256 key is generated. Its subject is ignored." : "Its subject is ignored.",
      }),
      field({ name: "days", label: "Valid for (days)", value: String(DEFAULT_DAYS), required: true, maxlength: 4, hint: "1 to 3650." }),
      field({ name: "nickname", label: "Nickname", maxlength: 64, hint: "Optional: which device or key this is." }),
      field({ name: "email", label: "E-mail", maxlength: 254, hint: "Optional." }),
    ],
    async submit(form) {
      const username = admin ? value(form, "user") : ctx.user.username;
      const csr = value(form, "csr");
      const days = value(form, "days");
      const nickname = value(form, "nickname");
      const email = value(form, "email");
      const issued = await ctx.api.post<IssuedCertificate>(`${certificatesPath(username)}/issue`, {
        ...(csr ? { csr } : {}),
        // Anything but digits goes as typed, for the server to say what is wrong with it.
        ...(days ? { days: /^\d+$/.test(days) ? Number(days) : days } : {}),
        ...(nickname ? { nickname } : {}),
        ...(email ? { email } : {}),
      });
      done(issued, () => (opener?.isConnected ? opener : null));
    },
  });
}

/**
 * The issued certificate, once: its files as downloads (object URLs, released when the dialog
 * closes) with a Copy button each. A generated key is in the server's answer only, so this is
 * the one chance to save it.
 */
function showIssued(ctx: PageContext, issued: IssuedCertificate, returnFocus: () => HTMLElement | null): void {
  const urls: string[] = [];
  const files: [name: string, role: string, pem: string][] = [
    ...(issued.key ? [[`${issued.username}.key`, "private key", issued.key] as [string, string, string]] : []),
    [`${issued.username}.pem`, "certificate", issued.certificate],
    ["rootCA.pem", "root CA", issued.ca],
  ];
  const links = files.map(([name, role, pem]) => {
    const url = URL.createObjectURL(new Blob([pem], { type: "application/x-pem-file" }));
    urls.push(url);
    return h(
      "li",
      {},
      h("a", { href: url, download: name, class: "download" }, name),
      h("span", { class: "muted small" }, role),
      copyButton(pem, {
        label: `Copy the ${role}`,
        done: (error) => {
          if (error) ctx.announce(`Copying failed: ${describeError(error)}`, "error");
        },
      }),
    );
  });
  const titleId = uniqueId("dialog-title");
  const close = h("button", { type: "button", class: "primary" }, "Done");
  const dialog = h(
    "dialog",
    { class: "dialog dialog-wide", "aria-labelledby": titleId },
    h(
      "div",
      { class: "dialog-form" },
      h("h2", { id: titleId }, `Certificate for ${issued.username}`),
      issued.key
        ? h(
            "div",
            { class: "callout key-warning", role: "note" },
            h(
              "p",
              {},
              h("strong", {}, "Save the private key now. "),
              "It is in this answer only: latchkey never stores it, and closing this dialog forgets it. " +
                `Keep it secret (mode 0600); whoever has it signs in as ${issued.username} until the certificate is revoked.`,
            ),
          )
        : null,
      h(
        "p",
        { class: "dialog-intro" },
        "Certificate ",
        h("code", { title: issued.ca_serial ?? "" }, issued.ca_serial ?? ""),
        ", valid until ",
        time(issued.not_after),
        `. It is registered: ${issued.key ? "this key" : "the key of your request"} signs in with rpc/auth_ssl now.`,
      ),
      h("ul", { class: "download-list", "aria-label": "Files of the certificate" }, ...links),
      h("div", { class: "dialog-actions" }, close),
    ),
  );
  const finish = () => {
    if (dialog.open) dialog.close();
  };
  close.addEventListener("click", finish);
  dialog.addEventListener("close", () => {
    for (const url of urls) URL.revokeObjectURL(url);
    dialog.remove();
    if (!document.querySelector("dialog[open]")) (returnFocus() ?? document.getElementById("page"))?.focus();
  });
  ctx.signal.addEventListener("abort", finish, { once: true });
  document.body.append(dialog);
  dialog.showModal();
  dialog.querySelector<HTMLElement>("a.download")?.focus();
}

function revokeCertificate(ctx: PageContext, certificate: UserCertificate, done: () => void): void {
  const whose = certificate.username === ctx.user.username ? "your account" : `${certificate.username}'s account`;
  confirmDialog({
    title: `Revoke ${certificate.subject ?? "this certificate"}?`,
    message: h(
      "p",
      {},
      `It no longer signs in to ${whose} (fingerprint `,
      h("code", {}, certificate.fingerprint ?? certificate.key_id),
      "). Sessions it has already opened run their course. This cannot be undone: to use it again, register it again.",
    ),
    confirmLabel: "Revoke certificate",
    busyLabel: "Revoking…",
    async action() {
      await ctx.api.post<UserCertificate>(`${certificatesPath(certificate.username)}/${certificate.fingerprint}/revoke`);
      done();
    },
  });
}

registerPage({
  id: "my-certificates",
  title: "My certificates",
  roles: ["admin", "viewer"],
  async render(container, ctx) {
    const admin = ctx.user.role === "admin";
    let status = ctx.params.get("status") ?? "active";
    if (!STATUS_CHOICES.some((c) => c.value === status)) status = "active";
    let offset = Math.max(0, Number(ctx.params.get("offset")) || 0);
    let rendered = "";
    const listing = h("div", { class: "listing", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
    const pager = new Pager("Pages of certificates", PAGE_SIZE, (next) => {
      offset = next;
      refresher.request();
    });
    const registerButton = h("button", { type: "button", class: "secondary" }, "Register certificate");
    const issueButton = h("button", { type: "button", class: "primary" }, "Issue certificate");
    const filter = h(
      "form",
      { class: "filters-inline", role: "search", "aria-label": "Filter the certificates" },
      field({ name: "status", label: "Status", value: status, choices: STATUS_CHOICES }),
    );
    replace(
      container,
      h(
        "div",
        { class: "page-head page-head-wrap" },
        h("h1", {}, "My certificates"),
        h("div", { class: "head-buttons" }, registerButton, issueButton),
      ),
      h(
        "p",
        { class: "lead" },
        "Certificates that sign in without a password: the client proves the certificate's private key over a one-time test string " +
          "(rpc/auth_ssl over the WebSocket).",
        admin ? " As an admin you see and manage everyone's; certificates the CA issues appear live." : null,
      ),
      filter,
      listing,
      pager.element,
    );

    filter.querySelector("select")?.addEventListener("change", () => {
      status = value(filter, "status");
      offset = 0;
      refresher.request();
    });
    filter.addEventListener("submit", (event) => event.preventDefault());

    /** Says what changed and loads the table again (the focus stays on its control, or goes to the page when that is gone). */
    const reload = (message: string) => {
      ctx.announce(message);
      refresher.request();
    };
    registerButton.addEventListener("click", () =>
      registerCertificate(ctx, (username) =>
        reload(username === ctx.user.username ? "Certificate registered." : `Certificate registered for ${username}.`),
      ),
    );

    issueButton.addEventListener("click", () =>
      issueCertificate(ctx, (issued, returnFocus) => {
        showIssued(ctx, issued, returnFocus);
        reload(issued.username === ctx.user.username ? "Certificate issued and registered." : `Certificate issued for ${issued.username}.`);
      }),
    );

    const actions = (certificate: UserCertificate): Child =>
      certificate.status === "revoked" || !certificate.fingerprint
        ? null
        : h(
            "button",
            {
              type: "button",
              class: "link danger-text",
              "aria-label": `Revoke ${certificate.subject ?? "certificate"} ${certificate.fingerprint.slice(0, 16)}`,
              "data-focus": `revoke-${certificate.fingerprint}`,
              onclick: () => revokeCertificate(ctx, certificate, () => reload("Certificate revoked.")),
            },
            "Revoke",
          );

    async function load(): Promise<void> {
      listing.setAttribute("aria-busy", "true");
      const query = { status: status === "any" ? null : status, limit: PAGE_SIZE, offset };
      const list = await ctx.api.get<Paged<UserCertificate>>(admin ? "/api/user-certificates" : "/api/me/certificates", query);
      if (ctx.signal.aborted) return;
      if (list.items.length === 0 && offset > 0) {
        offset = Math.max(0, offset - PAGE_SIZE);
        return load();
      }
      ctx.setParams({ status: status === "active" ? null : status, offset: offset || null });
      listing.removeAttribute("aria-busy");
      pager.update(offset, list.items.length, list.total);
      // An unchanged list leaves the table, and the focus in it, as it is.
      const signature = JSON.stringify(list);
      if (signature === rendered) return;
      rendered = signature;
      replaceKeepingFocus(listing, [
        list.items.length === 0
          ? emptyState(
              status === "revoked" ? "No revoked certificates." : "No certificates registered yet.",
              "Have one issued with the Issue certificate button, or register one you have with Register certificate.",
            )
          : dataTable(
              "Certificates",
              [
                ...(admin ? [{ label: "User", cell: (c: UserCertificate) => h("strong", {}, c.username) }] : []),
                { label: "Certificate", cell: nameCell },
                { label: "Issuer", cell: issuerCell },
                { label: "Key", cell: (c) => c.key_type },
                { label: "Fingerprint", cell: fingerprintCell },
                { label: "Expires", cell: (c) => time(c.not_after) },
                { label: "Registered", cell: (c) => time(c.registered_at) },
                { label: "Status", cell: statusCell },
                { label: "Actions", cell: actions, class: "actions" },
              ],
              list.items,
            ),
      ]);
    }

    const refresher = keepListingFresh(ctx, listing, "The certificates", load, {
      everyMs: REFRESH_MS,
      onFailure: () => void (rendered = ""),
    });
    ctx.subscribe("certificates.changed", () => refresher.request());

    await load();
  },
});
