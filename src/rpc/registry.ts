/**
 * The explicit registry of RPC handlers. Dispatch looks calls up in a Map keyed by
 * "namespace/name", so that names such as `__proto__` or `toString` are simply unknown.
 */
import * as v from "valibot";
import type { Role } from "../db/users.ts";
import { AppError, badRequest, forbidden, notFound, unauthorized } from "../core/errors.ts";
import type { Principal } from "../core/sessions.ts";
import type { Services } from "../core/services.ts";
import type { Login } from "../core/auth.ts";
import { describeIssue, issueField } from "../core/validation.ts";
import type { CertificateIdentity } from "../core/ca/identity.ts";

export type Level = "read" | "write";

/** What a call knows of its caller and connection. */
export interface RpcContext {
  services: Services;
  principal: Principal | null;
  address: string | null;
  /** Set on WebSocket calls: lets auth calls change who the connection is. */
  connection?: {
    /** Names this connection among all of the process's, on either listener (what `auth_ssl` binds its test string to). */
    id: string;
    /** The listener the WebSocket came through. */
    listener: "main" | "mtls";
    /** On the mTLS listener: the connection's valid client certificate, if it presented one. */
    certificate(): Extract<CertificateIdentity, { kind: "valid" }> | null;
    signIn(login: Principal | Login): void;
    signOut(): void;
    /** The enrolled client this connection speaks for, once registered. */
    clientUuid(): string | null;
    /** Another live connection already speaks for this client. */
    clientConnectedElsewhere(uuid: string): boolean;
    /** keyId: the enrollment key it was admitted with, if any (its revocation closes the socket); group: the client's. */
    registerClient(uuid: string, keyId: number | null, group: string | null, claim: string): void;
  };
  /** The REST mirror passes the bearer session so that `rpc/auth_clear` can end it. */
  transport: "ws" | "rest";
}

export interface RpcHandler {
  namespace: string;
  name: string;
  /** Other "namespace/name" spellings of the same call (the sysadm seed's `settings/sysadm` for `rpc/settings`). */
  aliases?: readonly string[];
  /** "public" calls are allowed before login (they are the login calls). */
  access: "public" | "session";
  /** Roles per level; a subsystem appears in `rpc/query` for the roles that may use it. */
  roles?: Record<Level, readonly Role[]>;
  args: v.GenericSchema;
  /** The level a given call needs (e.g. by its action); defaults to "read". */
  level?: (args: unknown) => Level;
  handle(ctx: RpcContext, args: unknown): unknown | Promise<unknown>;
}

/** Defines a handler with its args type inferred from the schema. */
export function defineHandler<S extends v.GenericSchema>(handler: {
  namespace: string;
  name: string;
  aliases?: readonly string[];
  access: "public" | "session";
  roles?: Record<Level, readonly Role[]>;
  args: S;
  level?: (args: v.InferOutput<S>) => Level;
  handle(ctx: RpcContext, args: v.InferOutput<S>): unknown | Promise<unknown>;
}): RpcHandler {
  return handler as RpcHandler;
}

const OBJECT_ARGS = new Set(["object", "strict_object", "loose_object", "object_with_rest", "variant"]);

export class Registry {
  private readonly handlers = new Map<string, RpcHandler>();
  private readonly queryCache = new Map<Role, Record<string, "read" | "read/write">>();

  constructor(handlers: readonly RpcHandler[]) {
    const keys = handlers.flatMap((h) => [`${h.namespace}/${h.name}`, ...(h.aliases ?? [])].map((key) => [key, h] as const));
    for (const [key, h] of keys) {
      if (this.handlers.has(key)) throw new Error(`RPC ${key} registered twice`);
      this.handlers.set(key, h);
    }
  }

  /** Every registered call (aliases too, each under its own name), for docs and the access-control tests. */
  entries(): [string, RpcHandler][] {
    return [...this.handlers.entries()];
  }

  lookup(namespace: string, name: string): RpcHandler {
    const handler = this.handlers.get(`${namespace}/${name}`);
    if (!handler) throw notFound(`unknown call ${namespace}/${name}`);
    return handler;
  }

  /** `rpc/query`: each subsystem this role may use, with "read" or "read/write". */
  query(role: Role): Record<string, "read" | "read/write"> {
    // The registry does not change after start: answer each role from a cache.
    let cached = this.queryCache.get(role);
    if (!cached) this.queryCache.set(role, (cached = this.computeQuery(role)));
    return cached;
  }

  private computeQuery(role: Role): Record<string, "read" | "read/write"> {
    const out: Record<string, "read" | "read/write"> = {};
    // An alias is the same subsystem: it is listed once, under the name it was defined with.
    for (const h of new Set(this.handlers.values())) {
      if (!h.roles) continue;
      const key = `${h.namespace}/${h.name}`;
      if (h.roles.write.includes(role)) out[key] = "read/write";
      else if (h.roles.read.includes(role)) out[key] = "read";
    }
    return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
  }

  async dispatch(ctx: RpcContext, namespace: string, name: string, rawArgs: unknown): Promise<unknown> {
    const handler = this.lookup(namespace, name);
    if (handler.access === "session" && !ctx.principal) throw unauthorized();
    // valibot's object schemas take an array as an object without keys; args meant as an object never are one.
    if (Array.isArray(rawArgs) && OBJECT_ARGS.has(handler.args.type)) throw badRequest("args must be a JSON object, not an array", "args");
    const parsed = v.safeParse(handler.args, rawArgs);
    if (!parsed.success) throw argsError(parsed.issues[0]);
    if (handler.roles && ctx.principal) {
      const level = handler.level?.(parsed.output) ?? "read";
      if (!handler.roles[level].includes(ctx.principal.role)) {
        throw forbidden(`${namespace}/${name} needs ${level} access, which the ${ctx.principal.role} role does not have`);
      }
    }
    ctx.services.metrics.rpc(`${handler.namespace}/${handler.name}`);
    return handler.handle(ctx, parsed.output);
  }
}

export function argsError(issue: v.BaseIssue<unknown>): AppError {
  const path = issueField(issue);
  const field = path ? `args.${path}` : "args";
  return badRequest(describeIssue(issue, field), field);
}
