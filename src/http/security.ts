/** Response headers every reply carries, and per-request metrics. */
import { Elysia } from "elysia";
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

export function securityPlugin(metrics: Metrics, options: { tls: boolean }) {
  const headers = securityHeaders(options);
  const started = new WeakMap<Request, number>();
  return new Elysia({ name: "latchkey/http/security" })
    .onRequest(({ set, request }) => {
      Object.assign(set.headers, headers);
      started.set(request, performance.now());
    })
    .onAfterResponse({ as: "global" }, ({ request, route, set }) => {
      const start = started.get(request);
      const status = typeof set.status === "number" ? set.status : 200;
      if (start !== undefined) metrics.request(request.method, route || "unmatched", status, (performance.now() - start) / 1000);
    });
}
