/** Response headers every reply carries, per-request metrics, and a guard on body shape. */
import { Elysia } from "elysia";
import { badRequest, type AppError } from "../core/errors.ts";
import type { Metrics } from "../core/metrics.ts";

const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function securityHeaders(options: { tls: boolean }): Record<string, string> {
  const headers: Record<string, string> = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
  };
  if (options.tls) headers["strict-transport-security"] = "max-age=31536000; includeSubDomains";
  return headers;
}

/** Deeper than any body the API takes. */
const MAX_BODY_DEPTH = 32;

/**
 * A parsed JSON body must be an object of bounded depth. valibot's object schemas accept an
 * array (so `[]` passed as an empty PATCH), and Elysia describes an invalid body by
 * pretty-printing all of it, which takes seconds for a small but deeply nested body and fails
 * (a 500) past some depth. Text bodies (the RPC mirror) and absent ones pass through.
 */
function bodyShapeError(body: unknown): AppError | null {
  if (body === null || typeof body !== "object") return null;
  if (Array.isArray(body)) return badRequest("the request body must be a JSON object, not an array", "body");
  // Iterative, so that the check itself cannot run out of stack.
  const pending: [object, number][] = [[body, 1]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [value, depth] = next;
    if (depth > MAX_BODY_DEPTH) return badRequest(`the request body is nested more than ${MAX_BODY_DEPTH} levels deep`, "body");
    for (const child of Object.values(value)) if (child !== null && typeof child === "object") pending.push([child, depth + 1]);
  }
  return null;
}

export function securityPlugin(metrics: Metrics, options: { tls: boolean }) {
  const headers = securityHeaders(options);
  const started = new WeakMap<Request, number>();
  return (
    new Elysia({ name: "latchkey/http/security" })
      .onRequest(({ set, request }) => {
        Object.assign(set.headers, headers);
        started.set(request, performance.now());
      })
      // Transform runs after the body is parsed and before it is validated.
      .onTransform({ as: "global" }, ({ body }) => {
        const error = bodyShapeError(body);
        if (error) throw error;
      })
      .onAfterResponse({ as: "global" }, ({ request, route, set }) => {
        const start = started.get(request);
        const status = typeof set.status === "number" ? set.status : 200;
        if (start !== undefined) metrics.request(request.method, route || "unmatched", status, (performance.now() - start) / 1000);
      })
  );
}
