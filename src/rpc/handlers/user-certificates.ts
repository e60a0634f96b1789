/**
 * `rpc/settings` (alias `settings/sysadm`, as the sysadm seed's table names it): the certificates
 * users sign in with through `rpc/auth_ssl`, in the shapes the original sysadm server answers.
 * Everyone manages their own; admins list and revoke everyone's (`user`).
 */
import * as v from "valibot";
import { certificateEmail, certificateNickname, username } from "../../core/fields.ts";
import { defineHandler } from "../registry.ts";

/** A public key as a sysadm client sends it: base64 of its PEM or DER (or the PEM itself). */
const pubKey = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(8192, "is too long (at most 8192 characters)"),
  v.regex(/^[A-Za-z0-9+/=_\s-]+$/, "must be base64 of a PEM public key or of a DER SubjectPublicKeyInfo"),
);

const certificate = v.pipe(v.string("must be a string"), v.nonEmpty("is required"), v.maxLength(65536, "is too long (at most 64 KiB)"));

export const sslSettingsHandler = defineHandler({
  namespace: "rpc",
  name: "settings",
  aliases: ["settings/sysadm"],
  access: "session",
  // Every signed-in user manages their own certificates; the core refuses others' to non-admins.
  roles: { read: ["admin", "viewer"], write: ["admin", "viewer"] },
  args: v.variant(
    "action",
    [
      v.strictObject({ action: v.literal("list_ssl_certs") }),
      v.strictObject({ action: v.literal("list_ssl_checksums") }),
      v.strictObject({
        action: v.literal("register_ssl_cert"),
        pub_key: v.optional(pubKey),
        certificate: v.optional(certificate),
        nickname: v.optional(certificateNickname),
        email: v.optional(certificateEmail),
        user: v.optional(username),
      }),
      v.strictObject({ action: v.literal("revoke_ssl_cert"), pub_key: pubKey, user: v.optional(username) }),
    ],
    "action must be one of list_ssl_certs, register_ssl_cert, revoke_ssl_cert, list_ssl_checksums",
  ),
  level: (args) => (args.action === "list_ssl_certs" || args.action === "list_ssl_checksums" ? "read" : "write"),
  async handle(ctx, args) {
    const certificates = ctx.services.userCertificates;
    const principal = ctx.principal!;
    const actor = { name: principal.username, address: ctx.address };
    switch (args.action) {
      case "list_ssl_certs":
        return certificates.sysadmList(principal);
      case "list_ssl_checksums":
        return certificates.checksums(principal);
      case "register_ssl_cert": {
        const registered = await certificates.register(actor, principal, {
          username: args.user,
          pubKey: args.pub_key,
          certificate: args.certificate,
          presented: ctx.connection?.certificate()?.der ?? null,
          nickname: args.nickname,
          email: args.email,
        });
        return { registered: true, user: registered.username, pub_key: registered.pub_key, fingerprint: registered.fingerprint };
      }
      case "revoke_ssl_cert": {
        const revoked = await certificates.revoke(actor, principal, args.user, args.pub_key);
        return { revoked: true, user: revoked.username, pub_key: revoked.pub_key, fingerprint: revoked.fingerprint };
      }
    }
  },
});
