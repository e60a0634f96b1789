/**
 * Errors as HTTP responses: `{"error": {"code", "message", "field"?}}` with a fitting status, or
 * the licensing seed's `{"result":"failure","error"}` on its calls. What the caller is told is
 * decided by `reportError` (core/errors.ts), for every transport alike; unexpected errors are
 * logged, never shown.
 */
import { Elysia } from "elysia";
import { AppError, reportError, type ErrorReport } from "../core/errors.ts";
import type { Logger } from "../log.ts";
import { describeIssue, issueField, type IssueLike } from "../core/validation.ts";

export interface ErrorBody {
  error: { code: string; message: string; field?: string; retry_after?: number };
}

/** The seed's licensing calls answer errors in their own shape, so that seed clients read them. */
const WIRE_PATHS = new Set(["/api/activate", "/api/check", "/api/deactivate"]);

/**
 * The body for an error: the seed's shape on its calls (`wire`), otherwise ours. An internal error
 * is always ours, so that it reads the same everywhere.
 */
export function errorBody(report: ErrorReport, wire = false): ErrorBody | Record<string, unknown> {
  if (wire && report.status !== 500) {
    return { result: "failure", error: report.message, ...(report.field === undefined ? {} : { field: report.field }) };
  }
  const body: ErrorBody = { error: { code: report.code, message: report.message } };
  if (report.field !== undefined) body.error.field = report.field;
  if (report.retryAfter !== undefined) body.error.retry_after = report.retryAfter;
  return body;
}

/** The headers an error reply carries besides the body's. */
export function errorHeaders(report: ErrorReport): Record<string, string> {
  const headers: Record<string, string> = {};
  if (report.retryAfter !== undefined) headers["retry-after"] = String(report.retryAfter);
  if (report.status === 401) headers["www-authenticate"] = 'Bearer realm="latchkey"';
  return headers;
}

/** Maps Elysia's own errors (validation, parse, not found) to AppErrors. */
export function toAppError(code: string | number, error: unknown): AppError | null {
  if (error instanceof AppError) return error;
  switch (code) {
    case "VALIDATION": {
      const e = error as { type?: string; valueError?: IssueLike };
      const on = e.type ?? "body";
      const path = issueField(e.valueError);
      // A body field is named by its path; a query or path parameter by where it came from too.
      const field = path || (on === "body" ? undefined : on);
      return new AppError("bad_request", describeIssue(e.valueError, field ?? on), field === undefined ? {} : { field });
    }
    case "PARSE":
      return new AppError("bad_request", "the request body is not valid JSON (or not the declared content type)", { field: "body" });
    case "NOT_FOUND":
      return new AppError("not_found", "no such route");
    case "INVALID_COOKIE_SIGNATURE":
    case "INVALID_FILE_TYPE":
      return new AppError("bad_request", "invalid request");
    default:
      return null;
  }
}

/**
 * The request's path. A Host header that is not a host (say, with a space in it) leaves Bun's
 * request.url relative ("/api/x?y"), which `new URL` refuses: answering an error must not throw.
 */
function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url.replace(/^[a-z]+:\/\/[^/]*/i, "").split(/[?#]/)[0] || "/";
  }
}

export function errorPlugin(log: Logger) {
  return new Elysia({ name: "latchkey/errors" }).onError({ as: "global" }, ({ code, error, set, request }) => {
    const report = reportError(toAppError(code, error) ?? error, (unexpected) =>
      log.error("unhandled error", {
        method: request.method,
        url: pathOf(request.url),
        error: String((unexpected as Error)?.stack ?? unexpected),
      }),
    );
    set.status = report.status;
    Object.assign(set.headers, errorHeaders(report));
    return errorBody(report, WIRE_PATHS.has(pathOf(request.url)));
  });
}
