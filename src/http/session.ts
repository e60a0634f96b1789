/**
 * Authentication and access control, declared on each route: `access: "admin" | "viewer" |
 * "session"` (a signed-in caller, at least that role), `public: true` (no session), or `rpc: true`
 * (the RPC registry decides per call). Each finds the caller from the bearer token or the panel's
 * cookie before the body is validated, enforces the role, requires the CSRF header on cookie-borne
 * writes, and hands the route a typed caller. A route that declares none is refused (403), and
 * `assertAccessDeclared` refuses to start an app with such a route.
 */
import type { Server } from "bun";
import { Elysia } from "elysia";
import { createHmac } from "node:crypto";
import { sameSecret } from "../core/secrets.ts";
import type { Actor } from "../core/accounts.ts";
import { forbidden, unauthorized } from "../core/errors.ts";
import type { Principal } from "../core/sessions.ts";
import type { Services } from "../core/services.ts";
import { clientAddress, type TrustedProxies } from "./client-address.ts";

export const COOKIE_TLS = "__Host-latchkey_session";
export const COOKIE_PLAIN = "latchkey_session";
export const CSRF_HEADER = "x-csrf-token";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export function readCookie(header: string | null, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(token: string, maxAgeSeconds: number, tls: boolean): string {
  const name = tls ? COOKIE_TLS : COOKIE_PLAIN;
  return `${name}=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${tls ? "; Secure" : ""}`;
}

export function clearedCookie(tls: boolean): string {
  return sessionCookie("", 0, tls);
}

/** The CSRF token of a cookie session: an HMAC of its id, so nothing needs storing. */
export function csrfToken(secret: Uint8Array, sessionId: string): string {
  return createHmac("sha256", secret).update(`csrf:${sessionId}`).digest("base64url");
}

/** A browser-sent Origin must name this very host; other clients send none. */
export function originAllowed(request: Request): boolean {
  const origin = request.headers.get("origin");
  if (origin === null) return true;
  const host = request.headers.get("host");
  try {
    return host !== null && new URL(origin).host === host;
  } catch {
    return false;
  }
}

/** What a signed-in route requires of its caller: any session, or at least a role. */
export type Access = "session" | "viewer" | "admin";

/** Who calls a route that needs a session. */
// Type aliases, not interfaces: Elysia takes what a resolve returns as an index-signature record.
export type Caller = {
  principal: Principal;
  /** The caller as the audit log names them. */
  actor: Actor;
  address: string | null;
  /** The session came from the panel's cookie rather than a bearer token. */
  viaCookie: boolean;
};

/** Who calls a route whose RPC calls decide for themselves (the REST mirror, the WebSocket). */
export type RpcCaller = {
  principal: Principal | null;
  address: string | null;
  viaCookie: boolean;
};

export async function findCaller(services: Services, request: Request, tls: boolean): Promise<Omit<RpcCaller, "address">> {
  const authorization = request.headers.get("authorization");
  if (authorization !== null) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (!match) throw unauthorized("the Authorization header must be 'Bearer <token>'");
    // Our tokens are 43 characters: a longer one is not looked up, and the caller is told why.
    if (match[1]!.length > 256) throw unauthorized("the bearer token is too long to be one of ours (at most 256 characters); log in again");
    const principal = await services.sessions.authenticate(match[1]!);
    if (!principal) throw unauthorized("the token is unknown or has expired; log in again");
    return { principal, viaCookie: false };
  }
  const cookie = readCookie(request.headers.get("cookie"), tls ? COOKIE_TLS : COOKIE_PLAIN);
  if (cookie) {
    const principal = await services.sessions.authenticate(cookie);
    if (principal) return { principal, viaCookie: true };
  }
  return { principal: null, viaCookie: false };
}

/** What a route declares: a signed-in access level, `public` or `rpc`. */
export type Declaration = Access | "public" | "rpc";

/** The resolve function of each access declaration, and what it declares. */
const declarations = new WeakMap<Function, Declaration>();

/** The OpenAPI security scheme of a bearer token (the panel's cookie works too, but is not for API clients). */
export const BEARER_SCHEME = { type: "http", scheme: "bearer" } as const;

/**
 * What each declaration puts in its route's OpenAPI operation, so the document cannot drift
 * from who may call the route: a signed-in route needs the bearer token, a public one nothing,
 * and an RPC route takes a token or none (the RPC registry decides per call).
 */
export const SECURITY: Record<Declaration, { bearer?: [] }[]> = {
  admin: [{ bearer: [] }],
  viewer: [{ bearer: [] }],
  session: [{ bearer: [] }],
  public: [],
  rpc: [{ bearer: [] }, {}],
};

interface RouteLike {
  method: string;
  path: string;
  hooks?: unknown;
}

/** What a route declares, or null when it declares nothing (or more than one thing). */
export function declarationOf(route: RouteLike): Declaration | null {
  const hooks = (route.hooks ?? {}) as { beforeHandle?: { fn?: unknown }[] };
  const found = (hooks.beforeHandle ?? []).flatMap((h) => {
    const declared = typeof h?.fn === "function" ? declarations.get(h.fn as Function) : undefined;
    return declared === undefined ? [] : [declared];
  });
  return found.length === 1 ? found[0]! : null;
}

/** Refuses to build an app in which a route does not say who may call it. */
export function assertAccessDeclared(routes: readonly RouteLike[]): void {
  const missing = routes.filter((route) => declarationOf(route) === null).map((route) => `${route.method} ${route.path}`);
  if (missing.length > 0) {
    throw new Error(
      `routes without an access declaration (access: "admin" | "viewer" | "session", public: true or rpc: true): ${missing.join(", ")}`,
    );
  }
}

export function sessionPlugin(services: Services, options: { tls: boolean; trustedProxies: TrustedProxies | null }) {
  /** What each request's declaration found, for its resolve (which runs after validation) to hand on. */
  const callers = new WeakMap<Request, RpcCaller>();
  const addressOf = (request: Request, server: Server<unknown> | null) =>
    clientAddress(server?.requestIP(request)?.address ?? null, request.headers, options.trustedProxies);

  /**
   * Authenticates and authorises before the body is validated: an unknown caller learns nothing of
   * the schema. Runs in each declaration's `transform`, which Elysia awaits before validating;
   * a session found in the cache costs no database work.
   */
  const check = async (need: Access | "rpc", request: Request, address: string | null): Promise<void> => {
    const caller = { ...(await findCaller(services, request, options.tls)), address };
    if (caller.principal && caller.viaCookie && !SAFE_METHODS.has(request.method)) {
      const given = request.headers.get(CSRF_HEADER) ?? "";
      if (!originAllowed(request) || !sameSecret(given, csrfToken(services.secret, caller.principal.sessionId))) {
        throw forbidden(`cross-site request refused: send the ${CSRF_HEADER} header the session gave you`);
      }
    }
    // For "rpc" the registry decides per call; a bad bearer token was still a 401 above.
    if (need !== "rpc") {
      if (!caller.principal) throw unauthorized("log in first: send 'Authorization: Bearer <token>'");
      if (need === "admin" && caller.principal.role !== "admin") throw forbidden("this needs the admin role");
    }
    callers.set(request, caller);
  };

  return new Elysia({ name: "latchkey/session" })
    .macro({
      access: (need: Access) => {
        const resolve = ({ request }: { request: Request }): Caller => {
          const { principal, address, viaCookie } = callers.get(request)!;
          return { principal: principal!, actor: { name: principal!.username, address }, address, viaCookie };
        };
        declarations.set(resolve, need);
        return {
          detail: { security: SECURITY[need] },
          async transform({ request, server }) {
            await check(need, request, addressOf(request, server));
          },
          resolve,
        };
      },
      public: (_: true) => {
        const resolve = ({ request }: { request: Request }) => ({ address: callers.get(request)!.address });
        declarations.set(resolve, "public");
        return {
          detail: { security: SECURITY.public },
          transform({ request, server }) {
            callers.set(request, { principal: null, address: addressOf(request, server), viaCookie: false });
          },
          resolve,
        };
      },
      rpc: (_: true) => {
        const resolve = ({ request }: { request: Request }): RpcCaller => callers.get(request)!;
        declarations.set(resolve, "rpc");
        return {
          detail: { security: SECURITY.rpc },
          async transform({ request, server }) {
            await check("rpc", request, addressOf(request, server));
          },
          resolve,
        };
      },
    })
    .onBeforeHandle({ as: "global" }, ({ request }) => {
      // Deny by default: a route that declared no access found no caller.
      if (!callers.has(request)) throw forbidden("this route has no access policy");
    });
}

/** The session plugin, made once by createApp and used by every route plugin for its declarations. */
export type SessionPlugin = ReturnType<typeof sessionPlugin>;
