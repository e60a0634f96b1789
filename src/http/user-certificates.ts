/**
 * REST for the certificates users sign in with (`rpc/auth_ssl`, SPEC §3): the caller's own, one
 * user's, everyone's (admins), registering one from its PEM, issuing one from latchkey's CA, and
 * revoking one by its fingerprint. Every signed-in user manages their own; another user's need
 * the admin role (403 otherwise).
 */
import { Elysia } from "elysia";
import * as v from "valibot";
import { certificateEmail, certificateFingerprint, certificateNickname, limit, offset, username } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import { DEFAULT_ISSUE_DAYS } from "../core/user-certificates.ts";
import type { SessionPlugin } from "./session.ts";

const status = v.optional(v.picklist(["active", "revoked"], "must be active or revoked"));
const userParams = v.strictObject({ username });
const csr = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("must be a PEM certificate request"),
  v.maxLength(16_384, "must be at most 16384 characters"),
);
const days = v.pipe(
  v.number("must be a whole number from 1 to 3650"),
  v.integer("must be a whole number from 1 to 3650"),
  v.minValue(1, "must be a whole number from 1 to 3650"),
  v.maxValue(3650, "must be a whole number from 1 to 3650"),
);

const VIEW_FIELDS =
  "Each item: `username`, `pub_key` (base64, as sysadm's `list_ssl_certs` keys it), `key_id` (SHA-256 of the public key), " +
  "`key_type`, `key_md5` (as `list_ssl_checksums` lists it), `nickname`, `email`, the certificate's `fingerprint` (SHA-256), " +
  "`subject` and `issuer` (CNs), `not_before`, `not_after`, `expired`, `self_signed`, `ca_serial` (when this server's CA " +
  "issued it), `status` (`active` or `revoked`), who registered and revoked it and when, and the `certificate` (PEM).";

export function userCertificateRoutes(services: Services, session: SessionPlugin) {
  const certificates = services.userCertificates;
  return new Elysia({ name: "latchkey/http/user-certificates", prefix: "/api" })
    .use(session)
    .get(
      "/me/certificates",
      ({ query, principal }) =>
        certificates.list(principal, { username: principal.username, status: query.status }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({ status, limit, offset }),
        access: "session",
        detail: {
          tags: ["user certificates"],
          summary: "List my certificates",
          description:
            "The certificates registered for the caller's certificate login (`rpc/auth_ssl`), live ones first, then newest first. " +
            VIEW_FIELDS,
        },
      },
    )
    .get(
      "/user-certificates",
      ({ query, principal }) =>
        certificates.list(principal, { username: query.username, status: query.status }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({ username: v.optional(username), status, limit, offset }),
        access: "admin",
        detail: {
          tags: ["user certificates"],
          summary: "List every user's certificates",
          description: `Admins only. Filter by \`username\` and \`status\`. ${VIEW_FIELDS}`,
        },
      },
    )
    .get(
      "/users/:username/certificates",
      ({ params, query, principal }) =>
        certificates.list(principal, { username: params.username, status: query.status }, query.limit ?? 100, query.offset ?? 0),
      {
        params: userParams,
        query: v.strictObject({ status, limit, offset }),
        access: "session",
        detail: {
          tags: ["user certificates"],
          summary: "List a user's certificates",
          description: `One's own, or anyone's for an admin (another user's: 403). ${VIEW_FIELDS}`,
        },
      },
    )
    .post(
      "/users/:username/certificates",
      async ({ params, body, set, actor, principal }) => {
        const registered = await certificates.register(actor, principal, {
          username: params.username,
          certificate: body.certificate,
          nickname: body.nickname,
          email: body.email,
        });
        set.status = 201;
        return registered;
      },
      {
        params: userParams,
        body: v.strictObject({
          certificate: v.pipe(v.string("must be a string"), v.nonEmpty("is required"), v.maxLength(65536, "is too long (at most 64 KiB)")),
          nickname: v.optional(certificateNickname),
          email: v.optional(certificateEmail),
        }),
        access: "session",
        detail: {
          tags: ["user certificates"],
          summary: "Register a certificate for certificate login",
          description:
            "`{certificate}` as PEM, with an optional `nickname` and `email`. A certificate issued by this server's CA must verify " +
            "(clientAuth, within its validity, not revoked); a self-signed one is registered by an admin only (403 otherwise); " +
            "any other is refused (400). A key already registered, for anyone: 409. One's own, or anyone's for an admin.",
        },
      },
    )
    .post(
      "/users/:username/certificates/issue",
      async ({ params, body, set, actor, principal }) => {
        const issued = await certificates.issue(actor, principal, {
          username: params.username,
          csr: body.csr,
          days: body.days,
          nickname: body.nickname,
          email: body.email,
        });
        set.status = 201;
        return issued;
      },
      {
        params: userParams,
        body: v.strictObject({
          csr: v.optional(csr),
          days: v.optional(days),
          nickname: v.optional(certificateNickname),
          email: v.optional(certificateEmail),
        }),
        access: "session",
        detail: {
          tags: ["user certificates"],
          summary: "Issue a user certificate and register it",
          description:
            "This server's CA issues a certificate of kind `user` (CN = the username, clientAuth only, valid `days`, 1 to 3650, " +
            `${DEFAULT_ISSUE_DAYS} unless given) and registers it at once, so that its key signs in with \`rpc/auth_ssl\`. ` +
            "The key is that of `csr`, a PKCS#10 request in PEM (its signature must verify; its subject is ignored), or, " +
            "without one, a P-256 key generated here: admins only (403 otherwise), returned in this reply as `key` and stored " +
            "nowhere. The reply is the registration (as the lists give it, the `certificate` PEM included) plus `ca`, the root " +
            "PEM. One's own, or anyone's for an admin (another user's: 403). A key already registered: 409.",
        },
      },
    )
    .post(
      "/users/:username/certificates/:fingerprint/revoke",
      ({ params, actor, principal }) => certificates.revoke(actor, principal, params.username, params.fingerprint),
      {
        params: v.strictObject({ username, fingerprint: certificateFingerprint }),
        access: "session",
        detail: {
          tags: ["user certificates"],
          summary: "Revoke a registered certificate",
          description:
            "By the certificate's SHA-256 fingerprint (hex, or colon-separated as openssl prints it). It no longer signs in; " +
            "the record stays, marked revoked. One's own, or anyone's for an admin (another user's: 403). " +
            "This does not revoke a certificate of this server's CA itself: `POST /api/certs/{serial}/revoke` does.",
        },
      },
    );
}
