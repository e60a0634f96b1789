/**
 * The protocol's fixed words, without a dependency, so that the admin panel's bundle can import
 * them: the WebSocket close codes, and why a `client/register` is refused — a machine-readable
 * `reason` for the agent to act on and, per reason, the woho seed's exact message for people.
 * `protocol.ts` re-exports all of it.
 */

/** The server closed a socket that was silent for the idle limit. */
export const CLOSE_IDLE = 4000;
/** The socket's session was ended (logout, user deleted, password or role changed). */
export const CLOSE_SESSION_ENDED = 4001;
/** The client's key (or the client itself) was revoked, reset or deleted. */
export const CLOSE_CLIENT_REVOKED = 4003;
/** Neither signed in nor registered within the deadline. */
export const CLOSE_AUTH_TIMEOUT = 4008;
/** RFC 6455 "try again later": over a connection cap, or replies piling up unread. */
export const CLOSE_TRY_AGAIN_LATER = 1013;

/** Why a registration was refused: the error envelope's `args.reason`. */
export const REFUSAL_REASONS = ["auth_required", "invalid_key", "bound_elsewhere", "key_in_use", "already_connected"] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** What each refusal says, byte for byte as the woho seed has it (older agents match on these). */
export const REFUSAL_MESSAGES = {
  auth_required: "AUTH_REQUIRED",
  invalid_key: "AUTH_FAILED: Invalid or revoked key",
  bound_elsewhere: "AUTH_FAILED: Key already bound to a different client",
  key_in_use: "AUTH_FAILED: Key already in use",
  already_connected: "AUTH_FAILED: Client already connected",
} as const satisfies Record<RefusalReason, string>;

export function isRefusalReason(value: unknown): value is RefusalReason {
  return typeof value === "string" && (REFUSAL_REASONS as readonly string[]).includes(value);
}
