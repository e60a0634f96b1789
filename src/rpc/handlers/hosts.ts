/** `latchkey/hosts` and `latchkey/certs`: hosts, their bundles, and the CA's certificates over RPC (the same operations as REST). */
import * as v from "valibot";
import { CERTIFICATE_KINDS, REVOCATION_REASONS } from "../../core/ca/authority.ts";
import { certificateSerial, group, hostname, rpcPage } from "../../core/fields.ts";
import { woodstockFiles } from "../../core/hosts.ts";
import { defineHandler } from "../registry.ts";

export const hostsHandler = defineHandler({
  namespace: "latchkey",
  name: "hosts",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: v.variant(
    "action",
    [
      v.strictObject({
        action: v.literal("list"),
        group: v.optional(group),
        status: v.optional(v.picklist(["online", "offline"], "must be online or offline")),
        ...rpcPage,
      }),
      v.strictObject({ action: v.literal("get"), hostname }),
      v.strictObject({ action: v.literal("register"), hostname, group: v.optional(group) }),
      v.strictObject({ action: v.literal("remove"), hostname }),
      v.strictObject({ action: v.literal("bundle"), hostname }),
    ],
    "action must be one of list, get, register, remove, bundle",
  ),
  // A bundle issues a certificate (and hands out its key): a write.
  level: (args) => (args.action === "list" || args.action === "get" ? "read" : "write"),
  async handle(ctx, args) {
    const hosts = ctx.services.hosts;
    const actor = { name: ctx.principal!.username, address: ctx.address };
    switch (args.action) {
      case "list":
        return hosts.listHosts(ctx.principal, { group: args.group, status: args.status }, args.limit, args.offset);
      case "get":
        return hosts.getHost(ctx.principal, args.hostname);
      case "register":
        return hosts.registerHost(actor, args.hostname, args.group ?? null);
      case "remove":
        await hosts.removeHost(actor, args.hostname);
        return "ok";
      case "bundle": {
        const bundle = await hosts.hostBundle(actor, args.hostname);
        const name = args.hostname.toLowerCase();
        return { hostname: name, ...bundle, files: woodstockFiles(name, bundle) };
      }
    }
  },
});

export const certsHandler = defineHandler({
  namespace: "latchkey",
  name: "certs",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: v.variant(
    "action",
    [
      v.strictObject({
        action: v.literal("list"),
        kind: v.optional(v.picklist(CERTIFICATE_KINDS, `must be one of ${CERTIFICATE_KINDS.join(", ")}`)),
        status: v.optional(v.picklist(["valid", "revoked"], "must be valid or revoked")),
        hostname: v.optional(hostname),
        ...rpcPage,
      }),
      v.strictObject({ action: v.literal("get"), serial: certificateSerial }),
      v.strictObject({
        action: v.literal("revoke"),
        serial: certificateSerial,
        reason: v.optional(v.picklist(REVOCATION_REASONS, `must be one of ${REVOCATION_REASONS.join(", ")}`), "unspecified"),
      }),
      v.strictObject({ action: v.literal("ca") }),
    ],
    "action must be one of list, get, revoke, ca",
  ),
  level: (args) => (args.action === "revoke" ? "write" : "read"),
  handle(ctx, args) {
    const ca = ctx.services.ca;
    switch (args.action) {
      case "list":
        return ca.list(ctx.principal, { kind: args.kind, status: args.status, hostname: args.hostname }, args.limit, args.offset);
      case "get":
        return ca.get(ctx.principal, args.serial);
      case "revoke":
        return ca.revoke({ name: ctx.principal!.username, address: ctx.address }, args.serial, args.reason);
      case "ca":
        return ca.root();
    }
  },
});
