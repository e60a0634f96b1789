/**
 * `GET /api/check` as a route of Bun's own router, outside Elysia's per-request pipeline.
 *
 * Checks are the hot path of the licensing API (every start of every licensed application, SPEC
 * §10 sets a throughput target for them), and the route needs none of what the pipeline does for
 * the other routes: it is public (no session), takes no body and has no path parameters. What the
 * global plugins add to every reply, this handler adds itself, and only that: the security
 * headers (security.ts), the request metric (security.ts), and the seed's error shape for bad
 * input (errors.ts). The Elysia route of the same path stays: it documents the call in OpenAPI and
 * answers HEAD, with the same `checkRequest` underneath.
 */
import type { Server } from "bun";
import { reportError } from "../core/errors.ts";
import type { Services } from "../core/services.ts";
import type { Logger } from "../log.ts";
import { clientAddress, type TrustedProxies } from "./client-address.ts";
import { errorBody } from "./errors.ts";
import { checkRequest, type CheckReply } from "./licensing-api.ts";
import { securityHeaders } from "./security.ts";

export const CHECK_PATH = "/api/check";

export function checkRoute(services: Services, log: Logger, options: { tls: boolean; trustedProxies: TrustedProxies | null }) {
  const headers = { ...securityHeaders(options), "content-type": "application/json" };
  // Built once: Bun copies a Headers object into a response faster than it reads a plain one.
  const prebuilt = new Headers(headers);
  const { metrics } = services;

  const respond = (request: Request, started: number, status: number, body: string, retryAfter: number | undefined): Response => {
    const response = new Response(body, {
      status,
      headers: retryAfter === undefined ? prebuilt : { ...headers, "retry-after": String(retryAfter) },
    });
    metrics.request(request.method, CHECK_PATH, status, (performance.now() - started) / 1000);
    return response;
  };

  const failed = (request: Request, started: number, error: unknown): Response => {
    const report = reportError(error, (unexpected) =>
      log.error("unhandled error", {
        method: request.method,
        url: CHECK_PATH,
        error: String((unexpected as Error)?.stack ?? unexpected),
      }),
    );
    return respond(request, started, report.status, JSON.stringify(errorBody(report, true)), report.retryAfter);
  };

  // A Response at once when the check is answered from the check cache; a promise of one when the
  // database must be read.
  return (request: Request, server: Server<unknown>): Response | Promise<Response> => {
    const started = performance.now();
    let reply: CheckReply | Promise<CheckReply>;
    try {
      reply = checkRequest(services, request, () =>
        clientAddress(server.requestIP(request)?.address ?? null, request.headers, options.trustedProxies),
      );
    } catch (error) {
      return failed(request, started, error);
    }
    if (reply instanceof Promise)
      return reply.then(
        (read) => respond(request, started, read.status, read.json, read.retryAfter),
        (error: unknown) => failed(request, started, error),
      );
    return respond(request, started, reply.status, reply.json, reply.retryAfter);
  };
}
