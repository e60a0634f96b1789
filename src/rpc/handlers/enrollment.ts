/** Enrollment over RPC: client registration, and the keys, settings and clients subsystems. */
import * as v from "valibot";
import type { RefusalReason as CoreRefusalReason } from "../../core/enrollment/index.ts";
import { readCertificateRequest } from "../../core/ca/x509.ts";
import { AppError, badRequest, unauthorized } from "../../core/errors.ts";
import { clientName, clientUuid, expiry, group, hostname, keyLabel, rpcPage, shortText } from "../../core/fields.ts";
import { REFUSAL_MESSAGES, type RefusalReason } from "../protocol.ts";
import { defineHandler } from "../registry.ts";

const id = v.pipe(v.number("must be a number"), v.integer("must be a whole number"), v.minValue(1, "must be a positive id"));

/**
 * A refused `client/register` as the protocol words it: the woho seed's message, and the reason
 * in a word for the agent (`args.reason` of the error envelope). A clone is a conflict (409), the
 * rest are forbidden (403).
 */
export class RegistrationRefused extends AppError {
  declare readonly reason: RefusalReason;

  constructor(reason: CoreRefusalReason) {
    super(reason === "already_connected" ? "conflict" : "forbidden", REFUSAL_MESSAGES[reason], { reason });
  }
}

/**
 * Per server (keyed by its services), the client UUIDs whose registration is under way and the id
 * of the connection registering each: registration awaits the database, so a second connection
 * with the same UUID meanwhile is a clone, as it would be once the first is registered.
 */
const registering = new WeakMap<object, Map<string, string>>();

export const registerHandler = defineHandler({
  namespace: "client",
  name: "register",
  access: "public",
  args: v.strictObject({
    uuid: clientUuid,
    name: clientName,
    hostname,
    version: v.optional(shortText(64), ""),
    os: v.optional(shortText(64), ""),
    auth_key: v.optional(v.pipe(v.string("must be a string"), v.maxLength(64, "must be at most 64 characters"))),
  }),
  async handle(ctx, args) {
    const connection = ctx.connection;
    if (!connection) throw badRequest("client/register needs the WebSocket: the connection is the client's presence", "namespace");
    const current = connection.clientUuid();
    if (current !== null && current !== args.uuid) throw badRequest("this connection is already registered as another client", "uuid");
    // On the mTLS listener, a certificate latchkey issued to a client admits that client, with no key.
    const certificate = connection.certificate();
    const owner = certificate === null ? null : await ctx.services.clientCertificates.clientOf(certificate.fingerprint);
    if (owner !== null && owner !== args.uuid) {
      throw new AppError("forbidden", "this connection's client certificate was issued to another client", { field: "uuid" });
    }
    const enrollment = ctx.services.enrollment;
    let underWay = registering.get(ctx.services);
    if (underWay === undefined) registering.set(ctx.services, (underWay = new Map()));
    const other = underWay.get(args.uuid);
    const clone = connection.clientConnectedElsewhere(args.uuid) || (other !== undefined && other !== connection.id);
    if (!clone) underWay.set(args.uuid, connection.id);
    try {
      const outcome = await enrollment.register(args, ctx.address, clone, owner !== null);
      if (outcome.kind === "refused") {
        const refusal = new RegistrationRefused(outcome.reason);
        await enrollment.recordRefusal(args.uuid, ctx.address, refusal.message);
        throw refusal;
      }
      connection.registerClient(args.uuid, outcome.keyId, outcome.group, outcome.claim);
      return { registered: true, uuid: outcome.uuid, group: outcome.group, reconnect: outcome.reconnect };
    } finally {
      if (!clone && underWay.get(args.uuid) === connection.id) underWay.delete(args.uuid);
    }
  },
});

/**
 * The certificate that ends enrollment (SPEC §4): a registered client sends a PKCS#10 request
 * (PEM) for the key it generated and keeps, and gets a clientAuth certificate for its hostname.
 */
export const csrHandler = defineHandler({
  namespace: "client",
  name: "csr",
  access: "public",
  args: v.strictObject({
    csr: v.pipe(
      v.string("must be a string"),
      v.nonEmpty("must be a PEM certificate request"),
      v.maxLength(16_384, "must be at most 16384 characters"),
    ),
  }),
  handle(ctx, args) {
    // The request is read first: a malformed one is the same 400 on every transport.
    const request = readCertificateRequest(args.csr);
    const connection = ctx.connection;
    if (!connection) throw badRequest("client/csr needs the WebSocket the client registered on", "namespace");
    const uuid = connection.clientUuid();
    if (uuid === null) throw unauthorized("register first (client/register)");
    return ctx.services.clientCertificates.issue(uuid, request, ctx.address);
  },
});

export const heartbeatHandler = defineHandler({
  namespace: "client",
  name: "heartbeat",
  access: "public",
  args: v.unknown(),
  handle(ctx) {
    // Only a registered client has a presence to keep alive.
    if (ctx.connection?.clientUuid() == null) throw unauthorized("register first (client/register)");
    return "ok";
  },
});

export const settingsHandler = defineHandler({
  namespace: "latchkey",
  name: "settings",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: v.variant(
    "action",
    [
      v.strictObject({ action: v.literal("get") }),
      v.strictObject({ action: v.literal("update"), require_auth_key: v.optional(v.boolean("must be true or false")) }),
    ],
    "action must be get or update",
  ),
  level: (args) => (args.action === "get" ? "read" : "write"),
  handle(ctx, args) {
    const enrollment = ctx.services.enrollment;
    if (args.action === "get") return enrollment.getSettings();
    return enrollment.updateSettings({ name: ctx.principal!.username, address: ctx.address }, { require_auth_key: args.require_auth_key });
  },
});

export const keysHandler = defineHandler({
  namespace: "latchkey",
  name: "keys",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: v.variant(
    "action",
    [
      v.strictObject({
        action: v.literal("list"),
        status: v.optional(v.picklist(["pending", "active", "revoked"], "must be pending, active or revoked")),
        ...rpcPage,
      }),
      v.strictObject({ action: v.literal("get"), id }),
      v.strictObject({
        action: v.literal("generate"),
        quantity: v.pipe(
          v.number("must be a number"),
          v.integer("must be a whole number"),
          v.minValue(1, "must be 1 to 100"),
          v.maxValue(100, "must be 1 to 100"),
        ),
        label: v.optional(keyLabel, ""),
        expires_at: v.optional(expiry),
        group: v.optional(group),
      }),
      v.strictObject({ action: v.literal("revoke"), id }),
      v.strictObject({ action: v.literal("reset"), id }),
      v.strictObject({ action: v.literal("delete"), id }),
    ],
    "action must be one of list, get, generate, revoke, reset, delete",
  ),
  level: (args) => (args.action === "list" || args.action === "get" ? "read" : "write"),
  async handle(ctx, args) {
    const enrollment = ctx.services.enrollment;
    const actor = { name: ctx.principal!.username, address: ctx.address };
    switch (args.action) {
      case "list":
        return enrollment.listKeys(ctx.principal, { status: args.status }, args.limit, args.offset);
      case "get":
        return enrollment.getKey(ctx.principal, args.id);
      case "generate":
        return {
          items: await enrollment.generate(actor, {
            quantity: args.quantity,
            label: args.label,
            expiresAt: args.expires_at ?? null,
            group: args.group ?? null,
          }),
        };
      case "revoke":
        return enrollment.revokeKey(actor, args.id);
      case "reset":
        return enrollment.resetKey(actor, args.id);
      case "delete":
        await enrollment.deleteKey(actor, args.id);
        return "ok";
    }
  },
});

export const clientsHandler = defineHandler({
  namespace: "latchkey",
  name: "clients",
  access: "session",
  roles: { read: ["admin", "viewer"], write: ["admin"] },
  args: v.variant(
    "action",
    [
      v.strictObject({
        action: v.literal("list"),
        status: v.optional(v.picklist(["online", "offline"], "must be online or offline")),
        group: v.optional(group),
        ...rpcPage,
      }),
      v.strictObject({ action: v.literal("get"), uuid: clientUuid }),
      v.strictObject({ action: v.literal("delete"), uuid: clientUuid }),
    ],
    "action must be one of list, get, delete",
  ),
  level: (args) => (args.action === "delete" ? "write" : "read"),
  async handle(ctx, args) {
    const enrollment = ctx.services.enrollment;
    switch (args.action) {
      case "list":
        return enrollment.listClients(ctx.principal!, { status: args.status, group: args.group }, args.limit, args.offset);
      case "get":
        return enrollment.getClient(ctx.principal!, args.uuid);
      case "delete":
        await enrollment.deleteClient({ name: ctx.principal!.username, address: ctx.address }, args.uuid);
        return "ok";
    }
  },
});
