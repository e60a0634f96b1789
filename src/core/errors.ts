/**
 * The one error type of the domain. `core` throws it; `http/errors.ts` and the RPC dispatcher map
 * it to an HTTP status with a JSON body and to an RPC error envelope. `message` is safe to show to
 * the caller; `cause` is only ever logged.
 */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "payload_too_large"
  | "throttled"
  | "internal"
  | "unavailable";

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

  constructor(
    code: ErrorCode,
    message: string,
    options: { field?: string; retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "AppError";
    this.code = code;
    this.status = statusOf[code];
    if (options.field !== undefined) this.field = options.field;
    if (options.retryAfter !== undefined) this.retryAfter = options.retryAfter;
  }
}

export const badRequest = (message: string, field?: string) =>
  new AppError("bad_request", message, field === undefined ? {} : { field });
export const unauthorized = (message = "Unauthorized") => new AppError("unauthorized", message);
export const forbidden = (message = "Forbidden") => new AppError("forbidden", message);
export const notFound = (message: string) => new AppError("not_found", message);
export const conflict = (message: string, field?: string) =>
  new AppError("conflict", message, field === undefined ? {} : { field });
