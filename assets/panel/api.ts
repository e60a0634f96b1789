/**
 * The panel's only way to the server: same-origin JSON requests carrying the session cookie and,
 * on every write, the CSRF token the session gave us. Failures become one error type whose
 * message is safe to show; a 401 ends the panel's session (the shell decides what that means).
 */

export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: string,
    message: string,
    /** The input field the server complains about, when it names one. */
    readonly field?: string,
    /** Seconds until a throttled request may be tried again. */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export type Query = Record<string, string | number | null | undefined>;

export interface RequestOptions {
  signal?: AbortSignal;
  /** The request may legitimately be refused with 401 (sign-in, the first session probe). */
  anonymous?: boolean;
}

export interface Api {
  get<T>(path: string, query?: Query, options?: RequestOptions): Promise<T>;
  /** A GET whose reply is a file to save (an export), not JSON. */
  getBlob(path: string, query?: Query, options?: RequestOptions): Promise<Blob>;
  post<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T>;
  patch<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T>;
  delete<T = void>(path: string, options?: RequestOptions): Promise<T>;
}

const state: { csrfToken: string | null; unauthorized: () => void; used: () => void } = {
  csrfToken: null,
  unauthorized: () => {},
  used: () => {},
};

/** Set by the shell: what a 401 does, and what a successful authenticated request tells it. */
export function configureApi(hooks: { unauthorized(): void; used(): void }): void {
  state.unauthorized = hooks.unauthorized;
  state.used = hooks.used;
}

export function setCsrfToken(token: string | null): void {
  state.csrfToken = token;
}

export function withQuery(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

async function request<T>(method: string, path: string, body: unknown, options: RequestOptions = {}, blob = false): Promise<T> {
  const headers: Record<string, string> = { accept: blob ? "*/*" : "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && state.csrfToken !== null) headers["x-csrf-token"] = state.csrfToken;
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError(0, "network", "Cannot reach the server. Check the connection and try again.");
  }
  if (blob && response.ok) {
    const file = await response.blob();
    if (!options.anonymous) state.used();
    return file as T;
  }
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (response.ok) {
    if (!options.anonymous) state.used();
    return parsed as T;
  }
  const error = toApiError(response, parsed);
  if (error.status === 401 && !options.anonymous) state.unauthorized();
  throw error;
}

function toApiError(response: Response, body: unknown): ApiError {
  const detail = (body as { error?: { code?: unknown; message?: unknown; field?: unknown; retry_after?: unknown } } | undefined)?.error;
  const headerWait = Number(response.headers.get("retry-after"));
  const retryAfter =
    typeof detail?.retry_after === "number" ? detail.retry_after : Number.isFinite(headerWait) && headerWait > 0 ? headerWait : undefined;
  const message =
    typeof detail?.message === "string" && detail.message
      ? detail.message
      : `The server answered ${response.status} ${response.statusText}.`;
  return new ApiError(
    response.status,
    typeof detail?.code === "string" ? detail.code : `http_${response.status}`,
    message,
    typeof detail?.field === "string" ? detail.field : undefined,
    retryAfter,
  );
}

export const api: Api = {
  get: (path, query, options) => request("GET", withQuery(path, query), undefined, options),
  getBlob: (path, query, options) => request("GET", withQuery(path, query), undefined, options, true),
  post: (path, body, options) => request("POST", path, body ?? {}, options),
  patch: (path, body, options) => request("PATCH", path, body ?? {}, options),
  delete: (path, options) => request("DELETE", path, undefined, options),
};

/** The same calls, cancelled together when `signal` aborts (a page that is left). */
export function boundApi(signal: AbortSignal): Api {
  return {
    get: (path, query, options) => api.get(path, query, { signal, ...options }),
    getBlob: (path, query, options) => api.getBlob(path, query, { signal, ...options }),
    post: (path, body, options) => api.post(path, body, { signal, ...options }),
    patch: (path, body, options) => api.patch(path, body, { signal, ...options }),
    delete: (path, options) => api.delete(path, { signal, ...options }),
  };
}
