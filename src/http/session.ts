/**
 * Authentication and access control for every REST route, in one global hook: find the
 * route's policy (unlisted routes are refused), find the caller from the bearer token or the
 * panel's cookie, enforce the role, and require the CSRF header on cookie-borne writes.
 */
import { Elysia } from "elysia";
import { createHmac, timingSafeEqual } from "node:crypto";
import { forbidden, unauthorized } from "../core/errors.ts";
import type { Principal } from "../core/sessions.ts";
import type { Services } from "../core/services.ts";
import { routeAccess, type Access } from "./access.ts";
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

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
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

export type Caller = {
  principal: Principal | null;
  address: string | null;
  /** The session came from the panel's cookie rather than a bearer token. */
  viaCookie: boolean;
};

export function findCaller(services: Services, request: Request, tls: boolean): Omit<Caller, "address"> {
  const authorization = request.headers.get("authorization");
  if (authorization !== null) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (!match) throw unauthorized("the Authorization header must be 'Bearer <token>'");
    // Our tokens are 43 characters: a longer one is not looked up, and the caller is told why.
    if (match[1]!.length > 256) throw unauthorized("the bearer token is too long to be one of ours (at most 256 characters); log in again");
    const principal = services.sessions.authenticate(match[1]!);
    if (!principal) throw unauthorized("the token is unknown or has expired; log in again");
    return { principal, viaCookie: false };
  }
  const cookie = readCookie(request.headers.get("cookie"), tls ? COOKIE_TLS : COOKIE_PLAIN);
  if (cookie) {
    const principal = services.sessions.authenticate(cookie);
    if (principal) return { principal, viaCookie: true };
  }
  return { principal: null, viaCookie: false };
}

/** routeAccess by route, then method: no key string is built per request. */
const policies = new Map<string, Map<string, Access>>();
for (const [key, access] of Object.entries(routeAccess)) {
  const space = key.indexOf(" ");
  const route = key.slice(space + 1);
  let byMethod = policies.get(route);
  if (!byMethod) policies.set(route, (byMethod = new Map()));
  byMethod.set(key.slice(0, space), access);
}

export function sessionPlugin(services: Services, options: { tls: boolean; trustedProxies: TrustedProxies | null }) {
  return new Elysia({ name: "latchkey/session" }).derive({ as: "global" }, ({ request, route, server }): Caller => {
    // HEAD is answered by the GET route, under the GET route's policy.
    const method = request.method === "HEAD" ? "GET" : request.method;
    const access = policies.get(route)?.get(method);
    const address = clientAddress(server?.requestIP(request)?.address ?? null, request.headers, options.trustedProxies);
    if (access === undefined) throw forbidden("this route has no access policy");
    if (access === "public") return { principal: null, address, viaCookie: false };
    const caller = findCaller(services, request, options.tls);
    if (caller.principal && caller.viaCookie && !SAFE_METHODS.has(request.method)) {
      const given = request.headers.get(CSRF_HEADER) ?? "";
      if (!originAllowed(request) || !sameToken(given, csrfToken(services.secret, caller.principal.sessionId))) {
        throw forbidden(`cross-site request refused: send the ${CSRF_HEADER} header the session gave you`);
      }
    }
    // For "rpc" the registry decides per call; a bad bearer token was still a 401 above.
    if (access === "rpc") return { ...caller, address };
    if (!caller.principal) throw unauthorized("log in first: send 'Authorization: Bearer <token>'");
    if (access === "admin" && caller.principal.role !== "admin") throw forbidden("this needs the admin role");
    return { ...caller, address };
  });
}
