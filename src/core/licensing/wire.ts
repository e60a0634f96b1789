/**
 * The public licensing calls of the mini-key-server seed as the domain sees them: what a call takes
 * (WireRequest) and what it comes to (an outcome per call). Outcomes are values, not replies:
 * http/licensing-api.ts renders each one to the seed's exact reply.
 */
import { badRequest } from "../errors.ts";

/**
 * A value at once, or a promise of it: what `check` returns, at once when the check cache holds
 * everything it needs (the hot path never waits), a promise when it must read the database.
 */
export type MaybePromise<T> = T | Promise<T>;

/** What the public licensing calls take, from a form, a query string or JSON. */
export interface WireRequest {
  token: string;
  app_id?: number | undefined;
  machine?: string | undefined;
  user?: string | undefined;
  hwid?: string | undefined;
  nonce?: string | undefined;
}

/**
 * The caller's address, or a way to read it: `check` reads it only when it needs it, since on a
 * server it costs a system call (getpeername) per request.
 */
export type AddressSource = string | null | (() => string | null);

/** Too many failures lately, from the caller's address or on the key: the caller must wait. */
export interface Throttled {
  readonly kind: "throttled";
  /** Seconds to wait. */
  readonly retryAfter: number;
  /** Why, in words safe to show the caller. */
  readonly reason: string;
  readonly supportMessage: string;
}

/**
 * Activate's failures carry the support message of the application named by `app_id`, or else of
 * the key's own application ("" when there is none).
 */
export type ActivateOutcome =
  /** `remaining` is -1 for an unlimited key. */
  | { readonly kind: "ok"; readonly remaining: number; readonly receipt: string }
  /** An unknown token, a key of another application, or a disabled key. */
  | { readonly kind: "invalid"; readonly supportMessage: string }
  | { readonly kind: "expired"; readonly supportMessage: string }
  /** No seat left. */
  | { readonly kind: "full"; readonly supportMessage: string }
  | Throttled;

/**
 * A check's outcomes are handed out again while they stand (a machine's receipt for up to a
 * minute, an application's failures until it changes): read-only, so a renderer may key on them.
 */
export type CheckOutcome = CheckPassed | CheckFailed | Throttled;

export interface CheckPassed {
  readonly kind: "ok";
  readonly receipt: string;
}

/**
 * `invalid`: an unknown token, another application's key, a disabled key, a machine that is not
 * activated, or no machine named at all. `supportMessage` is that of the application named by
 * `app_id` ("" when the id names none), never the key's own, which would tell the caller that the
 * token exists; without `app_id` there is none, as in the seed.
 */
export interface CheckFailed {
  readonly kind: "invalid" | "expired";
  readonly supportMessage?: string;
}

export type DeactivateOutcome =
  | { readonly kind: "ok"; readonly remaining: number }
  /** An unknown token, a key of another application, or a disabled key. */
  | { readonly kind: "invalid" }
  | { readonly kind: "not-activated" }
  | Throttled;

/** The machine an activation belongs to: its hwid, or its name for clients that send none; null when neither is given. */
export function machineIdentity(request: WireRequest): string | null {
  return request.hwid ?? (request.machine === undefined ? null : `machine:${request.machine}`);
}

/** Activate and deactivate name the machine whose seat they take or free (a check without one simply fails). */
export function requireMachine(request: WireRequest): string {
  const identity = machineIdentity(request);
  if (identity === null) throw badRequest("hwid is required (or machine, for clients that have no hardware id)", "hwid");
  return identity;
}
