/**
 * The one place that turns errors into HTTP responses:
 * `{"error": {"code", "message", "field"?}}` with a fitting status. Messages of unexpected
 * errors are never shown; they are logged.
 */
import { Elysia } from "elysia";
import { AppError } from "../core/errors.ts";
import type { Logger } from "../log.ts";
import { describeIssue, issueField, type IssueLike } from "../core/validation.ts";

export interface ErrorBody {
  error: { code: string; message: string; field?: string; retry_after?: number };
}

/** The seed's licensing calls answer errors in their own shape, so that seed clients read them. */
const WIRE_PATHS = new Set(["/api/activate", "/api/check", "/api/deactivate"]);

export function wireErrorBody(error: AppError): Record<string, unknown> {
  return { result: "failure", error: error.message, ...(error.field === undefined ? {} : { field: error.field }) };
}

/** What an unexpected error answers: its details go to the log only. */
export const INTERNAL_ERROR_BODY: ErrorBody = { error: { code: "internal", message: "internal error; the server log has the details" } };

export function errorBody(error: AppError): ErrorBody {
  const body: ErrorBody = { error: { code: error.code, message: error.message } };
  if (error.field !== undefined) body.error.field = error.field;
  if (error.retryAfter !== undefined) body.error.retry_after = error.retryAfter;
  return body;
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
    const appError = toAppError(code, error);
    if (!appError) {
      log.error("unhandled error", { method: request.method, url: pathOf(request.url), error: String((error as Error)?.stack ?? error) });
      set.status = 500;
      return INTERNAL_ERROR_BODY;
    }
    set.status = appError.status;
    if (appError.retryAfter !== undefined) set.headers["retry-after"] = String(appError.retryAfter);
    if (appError.status === 401) set.headers["www-authenticate"] = 'Bearer realm="latchkey"';
    if (WIRE_PATHS.has(pathOf(request.url))) return wireErrorBody(appError);
    return errorBody(appError);
  });
}
