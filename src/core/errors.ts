/**
 * The one error type of the domain. `core` throws it; `reportError` below is the one place that
 * decides what a caller is told of any error, which `http/errors.ts` renders as a JSON body (or
 * the licensing seed's shape) and `rpc/connections.ts` as an RPC error envelope. `message` is safe
 * to show to the caller; `cause` is only ever logged.
 */
import { DatabaseUnavailable } from "../db/sql.ts";
export type ErrorCode =
  "bad_request" | "unauthorized" | "forbidden" | "not_found" | "conflict" | "payload_too_large" | "throttled" | "internal" | "unavailable";

const statusOf: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  throttled: 429,
  internal: 500,
  unavailable: 503,
};

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  /** The input field the error is about, when there is one. */
  readonly field?: string;
  /** Seconds until a throttled caller may try again. */
  readonly retryAfter?: number;
  /** A machine-readable word for why, where a protocol defines one (e.g. a refused registration). */
  readonly reason?: string;

  constructor(code: ErrorCode, message: string, options: { field?: string; retryAfter?: number; reason?: string; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = "AppError";
    this.code = code;
    this.status = statusOf[code];
    if (options.field !== undefined) this.field = options.field;
    if (options.retryAfter !== undefined) this.retryAfter = options.retryAfter;
    if (options.reason !== undefined) this.reason = options.reason;
  }
}

/** What a caller is told of an error, whatever the transport. */
export interface ErrorReport {
  status: number;
  code: ErrorCode;
  message: string;
  field?: string;
  retryAfter?: number;
  reason?: string;
}

export const INTERNAL_MESSAGE = "internal error; the server log has the details";

/**
 * The one mapping of errors to what callers see: an AppError as it is; anything else is an
 * internal error whose details go to `logUnexpected` only, never to the caller.
 */
export function reportError(error: unknown, logUnexpected: (error: unknown) => void): ErrorReport {
  // Not a bug: the database is down or restarting (GET /healthz says so); the caller retries.
  if (error instanceof DatabaseUnavailable) {
    return { status: 503, code: "unavailable", message: "the database is unavailable; try again shortly", retryAfter: 5 };
  }
  if (!(error instanceof AppError)) {
    logUnexpected(error);
    return { status: 500, code: "internal", message: INTERNAL_MESSAGE };
  }
  const report: ErrorReport = { status: error.status, code: error.code, message: error.message };
  if (error.field !== undefined) report.field = error.field;
  if (error.retryAfter !== undefined) report.retryAfter = error.retryAfter;
  if (error.reason !== undefined) report.reason = error.reason;
  return report;
}

export const badRequest = (message: string, field?: string) => new AppError("bad_request", message, field === undefined ? {} : { field });
export const unauthorized = (message = "Unauthorized") => new AppError("unauthorized", message);
export const forbidden = (message = "Forbidden") => new AppError("forbidden", message);
export const notFound = (message: string) => new AppError("not_found", message);
export const conflict = (message: string, field?: string) => new AppError("conflict", message, field === undefined ? {} : { field });
