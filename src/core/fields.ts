/**
 * Valibot schemas for the fields that several inputs share (REST bodies, RPC args, the CLI and
 * users.json), so that every entry point applies the same rules.
 */
import * as v from "valibot";

export const USERNAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

export const username = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(64, "must be at most 64 characters"),
  v.regex(USERNAME_PATTERN, "may hold letters, digits and . _ @ - (starting with a letter or digit)"),
);

/** 8 to 1024 characters; longer input is refused before any hashing work is done. */
export const password = v.pipe(
  v.string("must be a string"),
  v.minLength(8, "must be at least 8 characters"),
  v.maxLength(1024, "must be at most 1024 characters"),
);

/** A password given to log in: any length up to the cap, so that a short one is a failed login, not a 400. */
export const loginPassword = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(1024, "must be at most 1024 characters"),
);

export const role = v.picklist(["admin", "viewer"], "must be admin or viewer");

export const group = v.pipe(
  v.string("must be a string"),
  v.regex(/^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,63}$/u, "group names hold letters, digits, space and . _ - (at most 64)"),
);

export const groups = v.pipe(v.array(group, "must be a list of group names"), v.maxLength(256, "at most 256 groups"));

export const limit = v.optional(
  v.pipe(v.string(), v.regex(/^\d{1,6}$/, "must be a whole number"), v.transform(Number), v.minValue(1), v.maxValue(1000, "at most 1000")),
);
export const offset = v.optional(v.pipe(v.string(), v.regex(/^\d{1,9}$/, "must be a whole number"), v.transform(Number)));

/** The calendar date exists: Date.parse rolls 2030-02-30 over to March 2 instead of refusing it. */
function calendarDate(s: string): boolean {
  const [y, m, d] = s.slice(0, 10).split("-").map(Number) as [number, number, number];
  const date = new Date(Date.UTC(y, m - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

/** An expiry: an ISO 8601 timestamp or a date (taken as the start of that day, UTC); milliseconds out. */
export const expiry = v.pipe(
  v.string("must be a date (YYYY-MM-DD) or an ISO 8601 timestamp"),
  v.check(
    (s) => /^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2}))?$/.test(s) && !Number.isNaN(Date.parse(s)) && calendarDate(s),
    "must be a date (YYYY-MM-DD) or an ISO 8601 timestamp",
  ),
  v.transform((s) => Date.parse(s)),
);

export const appName = v.pipe(
  v.string("must be a string"),
  v.trim(),
  v.nonEmpty("is required"),
  v.maxLength(100, "must be at most 100 characters"),
  v.regex(/^[^\p{Cc}\p{Cf}]+$/u, "may not hold control or format characters"),
);

/** Free text may hold anything but NUL, which PostgreSQL cannot store (and no one means to send). */
export const noNul = v.check((s: string) => !s.includes("\u0000"), "may not hold NUL characters");

export const supportMessage = v.pipe(v.string("must be a string"), v.maxLength(1000, "must be at most 1000 characters"), noNul);

export const memo = v.pipe(v.string("must be a string"), v.maxLength(1000, "must be at most 1000 characters"), noNul);

/** A machine's hardware id as an admin names it (to remove its activation). */
export const hwid = v.pipe(
  v.string("must be a string"),
  v.minLength(1, "is required"),
  v.maxLength(255, "must be at most 255 characters"),
  noNul,
);

/** A search or filter term of at most `max` characters. */
export const filterText = (max: number) =>
  v.pipe(v.string("must be a string"), v.maxLength(max, `must be at most ${max} characters`), noNul);

/** Activations allowed: -1 for unlimited, otherwise 0 to 1,000,000. */
export const activationsAllowed = v.pipe(
  v.number("must be a number"),
  v.integer("must be a whole number"),
  v.minValue(-1, "must be -1 (unlimited) or more"),
  v.maxValue(1_000_000, "must be at most 1000000"),
);

/** A numeric id as text (a path segment, a CLI argument): a positive whole number. */
export const idParam = v.pipe(v.string(), v.regex(/^[1-9]\d{0,14}$/, "must be a positive whole number"), v.transform(Number));

/** The page of a list in RPC args: `limit` 1-1000 (default 100) and `offset` (default 0), as JSON numbers. */
export const rpcPage = {
  limit: v.optional(
    v.pipe(
      v.number("must be a number"),
      v.integer("must be a whole number"),
      v.minValue(1, "must be at least 1"),
      v.maxValue(1000, "must be at most 1000"),
    ),
    100,
  ),
  offset: v.optional(v.pipe(v.number("must be a number"), v.integer("must be a whole number"), v.minValue(0, "must be at least 0")), 0),
};

/** A stored time (milliseconds since the epoch, or null) as the API shows it: ISO 8601 UTC. */
export function isoTime(ms: number): string;
export function isoTime(ms: number | null): string | null;
export function isoTime(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** A client UUID: RFC 4122 text form, any version; lower-cased. */
export const clientUuid = v.pipe(
  v.string("must be a string"),
  v.regex(/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/, "must be a UUID (8-4-4-4-12 hex digits)"),
  v.toLowerCase(),
);

/** A DNS hostname (RFC 1123 labels). */
export const hostname = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(253, "must be at most 253 characters"),
  v.regex(
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
    "must be a hostname (letters, digits, - and . between labels)",
  ),
);

/**
 * A certificate serial number in hex, any case: as `openssl x509 -serial` prints it (`3A0F…`) or
 * with colons between the bytes (`3a:0f:…`); at most 40 bytes (RFC 5280 allows 20).
 */
export const certificateSerial = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(119, "must be at most 80 hex digits"),
  v.regex(/^(?:[0-9A-Fa-f]{1,80}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){1,39})$/, "must be a serial number in hex (3A0F… or 3a:0f:…)"),
);

/** A client's display name: printable, no control characters. */
export const clientName = v.pipe(
  v.string("must be a string"),
  v.trim(),
  v.nonEmpty("is required"),
  v.maxLength(64, "must be at most 64 characters"),
  v.regex(/^[^\p{Cc}\p{Cf}]+$/u, "may not hold control or format characters"),
);

export const shortText = (max: number) =>
  v.pipe(
    v.string("must be a string"),
    v.maxLength(max, `must be at most ${max} characters`),
    v.regex(/^[^\p{Cc}]*$/u, "may not hold control characters"),
  );

export const keyLabel = shortText(100);

/** A certificate's SHA-256 fingerprint: 64 hex digits, any case, or colon-separated as openssl prints it. */
export const certificateFingerprint = v.pipe(
  v.string("must be a string"),
  v.nonEmpty("is required"),
  v.maxLength(95, "must be a SHA-256 fingerprint (64 hex digits)"),
  v.regex(
    /^(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})$/,
    "must be a SHA-256 fingerprint (64 hex digits, or AB:CD:… as openssl prints it)",
  ),
);

/** A registered certificate's nickname (sysadm `register_ssl_cert`): up to 64 characters, no control characters. */
export const certificateNickname = shortText(64);

/** The e-mail address a certificate is registered with: empty, or something@somewhere (free text otherwise, as in sysadm). */
export const certificateEmail = v.pipe(
  v.string("must be a string"),
  v.maxLength(254, "must be at most 254 characters"),
  v.regex(/^(?:[^\s@\p{Cc}]+@[^\s@\p{Cc}]+)?$/u, "must be an e-mail address (name@example.com)"),
);
