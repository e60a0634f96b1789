/**
 * SCRAM-SHA-256 (RFC 5802 with the SHA-256 profile of RFC 7677), without channel binding.
 *
 * The server side parses the client's messages, builds server-first and checks the client's
 * proof against stored credentials (StoredKey and ServerKey, never the password). The small
 * client side exists for tests, the CLI and documentation.
 *
 * A server exchange looks like this:
 *   const first = parseClientFirst(clientFirstText);
 *   const creds = lookup(first.username) ?? decoyCredentials(secret, first.username);
 *   const combinedNonce = first.clientNonce + newServerNonce();
 *   const serverFirst = buildServerFirst(combinedNonce, creds.salt, creds.iterations);
 *   ... send serverFirst, receive clientFinalText ...
 *   const serverFinal = verifyClientFinal({ clientFirst: first, serverFirst,
 *     clientFinal: parseClientFinal(clientFinalText), combinedNonce, credentials: creds });
 *   // null: authentication failed; otherwise send serverFinal ("v=...").
 */
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { badRequest } from "./errors.ts";

const pbkdf2Async = promisify(pbkdf2);

/** RFC 7677 section 4: iteration counts below 4096 are not to be used. */
export const SCRAM_MIN_ITERATIONS = 4096;

/** Byte length of SHA-256 output, hence of every key, signature and proof. */
const KEY_LENGTH = 32;

/** Client-first is tiny in practice; the bound keeps hostile input cheap to reject. */
const MAX_CLIENT_FIRST_LENGTH = 1024;
/** Client-final repeats the whole nonce (client part up to ~1 KiB plus ours), so it gets more room. */
const MAX_CLIENT_FINAL_LENGTH = 2048;

/** RFC 5802 `printable`: %x21-7E except ",". */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
/** RFC 5802 `attr-val` for extensions; the value may not be empty and cannot hold "," (we split on it). */
const EXTENSION = /^[A-Za-z]=[^\0]+$/;
/** Canonical padded base64 only, so that a string comparison of c= is exact. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface ScramCredentials {
  /** Base64 salt. */
  salt: string;
  iterations: number;
  /** Base64 H(ClientKey). */
  storedKey: string;
  /** Base64 HMAC(SaltedPassword, "Server Key"). */
  serverKey: string;
}

const hmac = (key: Uint8Array, data: string | Uint8Array): Buffer => createHmac("sha256", key).update(data).digest();
const sha256 = (data: Uint8Array): Buffer => createHash("sha256").update(data).digest();

function xor(a: Uint8Array, b: Uint8Array): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

function isBase64(value: string): boolean {
  return value.length > 0 && BASE64.test(value);
}

async function saltedPassword(password: string, salt: Uint8Array, iterations: number): Promise<Buffer> {
  return pbkdf2Async(saslPrep(password), salt, iterations, KEY_LENGTH, "sha256");
}

/** Derives what the server stores for a password: salt, iterations, StoredKey and ServerKey. */
export async function deriveScramCredentials(
  password: string,
  iterations = SCRAM_MIN_ITERATIONS,
  salt: Uint8Array = randomBytes(16),
): Promise<ScramCredentials> {
  if (!Number.isSafeInteger(iterations) || iterations < SCRAM_MIN_ITERATIONS) {
    throw new Error(`SCRAM iteration count must be an integer of at least ${SCRAM_MIN_ITERATIONS}, got ${iterations}`);
  }
  if (salt.length === 0) throw new Error("SCRAM salt must not be empty");
  const salted = await saltedPassword(password, salt, iterations);
  return {
    salt: Buffer.from(salt).toString("base64"),
    iterations,
    storedKey: sha256(hmac(salted, "Client Key")).toString("base64"),
    serverKey: hmac(salted, "Server Key").toString("base64"),
  };
}

/** RFC 3454 table C.1.2: non-ASCII space characters. */
const NON_ASCII_SPACE = /[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g;
/** RFC 3454 table B.1: characters commonly mapped to nothing. */
const MAPPED_TO_NOTHING = /[\u00ad\u034f\u1806\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]/g;

/**
 * Normalizes a password as SASLprep (RFC 4013) would for the common cases: non-ASCII spaces
 * become U+0020, "commonly mapped to nothing" characters are removed, and the result is NFKC
 * normalized. Spaces are mapped before removal, so U+200B (in both tables) becomes a space, as
 * PostgreSQL and the `saslprep` npm package do.
 *
 * It does NOT reject prohibited output (control characters, private use, surrogates,
 * non-characters...), does not apply the bidirectional-text checks and does not refuse unassigned
 * code points. Those checks only ever turn a password into an error; since the same function runs
 * when the password is set and when it is used, skipping them never makes a login fail, but a
 * strict third-party client may refuse a password this accepts.
 */
export function saslPrep(password: string): string {
  return password.replace(NON_ASCII_SPACE, " ").replace(MAPPED_TO_NOTHING, "").normalize("NFKC");
}

/** Escapes a username for `n=`: "=" first, or the "=" of "=2C" would be escaped again. */
export function escapeSaslName(name: string): string {
  return name.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

/**
 * Reverses {@link escapeSaslName}; returns null when an "=" is not followed by 2C or 3D. The hex
 * is matched case-insensitively because ABNF string literals are case-insensitive.
 */
export function unescapeSaslName(escaped: string): string | null {
  if (!/^(?:[^=,]|=2[Cc]|=3[Dd])*$/.test(escaped)) return null;
  return escaped.replace(/=2C|=3D/gi, (e) => (e.toUpperCase() === "=2C" ? "," : "="));
}

export interface ClientFirst {
  /** E.g. "n,,"; the client-final c= must be its base64. */
  gs2Header: string;
  /** Unescaped username. */
  username: string;
  clientNonce: string;
  /** client-first-message-bare, part of the AuthMessage. */
  bare: string;
}

type Fail = (problem: string) => never;

/** A thrower for one message kind; typed as `Fail` so that TypeScript narrows after a call. */
function failFor(kind: string, field: string): Fail {
  return (problem) => {
    throw badRequest(`Malformed SCRAM ${kind} message: ${problem}`, field);
  };
}

/** Checks the length and encoding shared by both client messages. */
function checkEnvelope(message: string, maxLength: number, fail: Fail): void {
  if (message.length === 0) fail("it is empty");
  if (message.length > maxLength) fail(`it is longer than ${maxLength} characters`);
  if (!message.isWellFormed()) fail("it is not valid Unicode");
  if (message.includes("\0")) fail("it contains a NUL character");
}

export function parseClientFirst(message: string): ClientFirst {
  const fail: Fail = failFor("client-first", "client_first");
  checkEnvelope(message, MAX_CLIENT_FIRST_LENGTH, fail);

  // gs2-header = cbind-flag "," [authzid] ","
  if (message.startsWith("p=")) {
    fail('channel binding (p=) is not supported; use SCRAM-SHA-256 with gs2 header "n,,"');
  }
  const flagEnd = message.indexOf(",");
  const headerEnd = flagEnd === -1 ? -1 : message.indexOf(",", flagEnd + 1);
  const flag = message.slice(0, flagEnd);
  if ((flag !== "n" && flag !== "y") || headerEnd === -1) {
    fail('it must start with the gs2 header "n,," or "y,,"');
  }
  const authzid = message.slice(flagEnd + 1, headerEnd);
  if (authzid.startsWith("a=")) fail("an authorization identity (a=) is not supported");
  if (authzid !== "") fail("the gs2 header is malformed");
  const gs2Header = message.slice(0, headerEnd + 1);
  const bare = message.slice(headerEnd + 1);

  // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
  if (bare.startsWith("m=")) fail("mandatory extensions (m=) are not supported");
  const [user, nonce, ...extensions] = bare.split(",");
  if (user === undefined || !user.startsWith("n=")) fail("expected n=username after the gs2 header");
  if (nonce === undefined || !nonce.startsWith("r=")) fail("expected r=nonce after the username");
  const escaped = user.slice(2);
  if (escaped === "") fail("the username is empty");
  const username = unescapeSaslName(escaped);
  if (username === null) fail('the username has an "=" that is not the escape =2C or =3D');
  const clientNonce = nonce.slice(2);
  if (clientNonce === "") fail("the nonce is empty");
  if (!PRINTABLE.test(clientNonce)) fail("the nonce has characters outside printable ASCII");
  // Unknown optional extensions must be ignored (RFC 5802 section 5.1), but not garbage.
  for (const extension of extensions) {
    if (!EXTENSION.test(extension)) fail(`"${extension.slice(0, 20)}" is not an attribute=value pair`);
  }
  return { gs2Header, username, clientNonce, bare };
}

/** The server's half of the nonce: 24 random bytes, base64 (which is always `printable`). */
export function newServerNonce(): string {
  return randomBytes(24).toString("base64");
}

export function buildServerFirst(combinedNonce: string, salt: string, iterations: number): string {
  return `r=${combinedNonce},s=${salt},i=${iterations}`;
}

export interface ClientFinal {
  /** The c= value: base64 of the gs2 header (we accept no channel-binding data). */
  channelBinding: string;
  nonce: string;
  /** Base64 ClientProof. */
  proof: string;
  /** client-final-message-without-proof, part of the AuthMessage. */
  withoutProof: string;
}

export function parseClientFinal(message: string): ClientFinal {
  const fail: Fail = failFor("client-final", "client_final");
  checkEnvelope(message, MAX_CLIENT_FINAL_LENGTH, fail);

  // client-final-message = "c=" base64 "," "r=" nonce ["," extensions] "," "p=" base64
  const parts = message.split(",");
  const [binding, nonce] = parts;
  const last = parts.at(-1)!;
  if (binding === undefined || !binding.startsWith("c=")) fail("expected c=channel-binding first");
  if (nonce === undefined || !nonce.startsWith("r=")) fail("expected r=nonce after the channel binding");
  if (parts.length < 3 || !last.startsWith("p=")) fail("expected p=proof as the last attribute");
  const channelBinding = binding.slice(2);
  if (!isBase64(channelBinding)) fail("the channel binding (c=) is not base64");
  const combinedNonce = nonce.slice(2);
  if (combinedNonce === "") fail("the nonce is empty");
  if (!PRINTABLE.test(combinedNonce)) fail("the nonce has characters outside printable ASCII");
  for (const extension of parts.slice(2, -1)) {
    if (!EXTENSION.test(extension)) fail(`"${extension.slice(0, 20)}" is not an attribute=value pair`);
  }
  const proof = last.slice(2);
  if (!isBase64(proof)) fail("the proof (p=) is not base64");
  if (Buffer.from(proof, "base64").length !== KEY_LENGTH) fail(`the proof (p=) must be ${KEY_LENGTH} bytes`);
  return { channelBinding, nonce: combinedNonce, proof, withoutProof: parts.slice(0, -1).join(",") };
}

/**
 * Verifies the client's proof (constant-time compare of H(ClientKey) with StoredKey); returns
 * server-final "v=..." on success, null on failure. Checks that c= matches base64(gs2Header) and
 * the nonce equals combinedNonce. Every failure is the same null so that the caller answers them
 * all alike and leaks nothing about which check failed.
 */
export function verifyClientFinal(args: {
  clientFirst: ClientFirst;
  serverFirst: string;
  clientFinal: ClientFinal;
  combinedNonce: string;
  credentials: ScramCredentials;
}): string | null {
  const { clientFirst, serverFirst, clientFinal, combinedNonce, credentials } = args;
  if (clientFinal.channelBinding !== Buffer.from(clientFirst.gs2Header).toString("base64")) return null;
  // The nonce is public, so a plain comparison is fine; the prefix check guards a caller that
  // built combinedNonce from something other than this client's nonce.
  if (clientFinal.nonce !== combinedNonce || !combinedNonce.startsWith(clientFirst.clientNonce)) return null;

  const storedKey = Buffer.from(credentials.storedKey, "base64");
  const serverKey = Buffer.from(credentials.serverKey, "base64");
  if (storedKey.length !== KEY_LENGTH || serverKey.length !== KEY_LENGTH) {
    throw new Error("stored SCRAM credentials are corrupt: keys must be 32 bytes");
  }
  const authMessage = `${clientFirst.bare},${serverFirst},${clientFinal.withoutProof}`;
  const clientSignature = hmac(storedKey, authMessage);
  // parseClientFinal guarantees a 32-byte proof, so both sides of the compare have equal length.
  const clientKey = xor(Buffer.from(clientFinal.proof, "base64"), clientSignature);
  if (!timingSafeEqual(sha256(clientKey), storedKey)) return null;
  return `v=${hmac(serverKey, authMessage).toString("base64")}`;
}

/**
 * Decoy credentials for unknown users: deterministic from (secret, username) so that repeated
 * starts for the same unknown user give the same salt, indistinguishable in shape from a real
 * user's.
 */
export function decoyCredentials(
  secret: Uint8Array,
  username: string,
  iterations = SCRAM_MIN_ITERATIONS,
): Pick<ScramCredentials, "salt" | "iterations"> {
  // 16 bytes to match deriveScramCredentials' salt length; the label separates this use of the secret.
  const salt = hmac(secret, `latchkey scram decoy salt\0${username}`).subarray(0, 16);
  return { salt: salt.toString("base64"), iterations };
}

// --- Client side (for tests, the CLI and documentation) ---

/** Builds client-first with gs2 header "n,," (no channel binding); the nonce defaults to 18 random bytes. */
export function clientFirstMessage(
  username: string,
  clientNonce: string = randomBytes(18).toString("base64"),
): { message: string; bare: string; nonce: string } {
  if (username === "") throw new Error("SCRAM username must not be empty");
  if (!PRINTABLE.test(clientNonce)) throw new Error("SCRAM client nonce must be printable ASCII without ','");
  const bare = `n=${escapeSaslName(username)},r=${clientNonce}`;
  return { message: `n,,${bare}`, bare, nonce: clientNonce };
}

/**
 * Builds client-final for a client-first made by {@link clientFirstMessage}. The returned
 * expectedServerSignature is the base64 value the server's "v=" must carry; check it with
 * {@link verifyServerFinal}.
 */
export async function clientFinalMessage(args: {
  password: string;
  clientFirstBare: string;
  serverFirst: string;
  clientNonce: string;
}): Promise<{ message: string; expectedServerSignature: string }> {
  const { password, clientFirstBare, serverFirst, clientNonce } = args;
  const attributes = serverFirst.split(",");
  const [r, s, i] = attributes;
  if (attributes.length < 3 || !r?.startsWith("r=") || !s?.startsWith("s=") || !i?.startsWith("i=")) {
    throw new Error("SCRAM server-first message is malformed: expected r=nonce,s=salt,i=iterations");
  }
  const nonce = r.slice(2);
  // A server that does not extend our nonce is replaying or confused; either way, stop here.
  if (!nonce.startsWith(clientNonce) || nonce.length === clientNonce.length || !PRINTABLE.test(nonce)) {
    throw new Error("SCRAM server nonce does not extend the client nonce");
  }
  const salt = s.slice(2);
  if (!isBase64(salt)) throw new Error("SCRAM server salt is not base64");
  const iterationText = i.slice(2);
  const iterations = Number(iterationText);
  if (!/^[0-9]+$/.test(iterationText) || !Number.isSafeInteger(iterations) || iterations < SCRAM_MIN_ITERATIONS) {
    throw new Error(`SCRAM iteration count must be an integer of at least ${SCRAM_MIN_ITERATIONS}, got "${iterationText}"`);
  }

  const salted = await saltedPassword(password, Buffer.from(salt, "base64"), iterations);
  const clientKey = hmac(salted, "Client Key");
  const withoutProof = `c=${Buffer.from("n,,").toString("base64")},r=${nonce}`;
  const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
  return {
    message: `${withoutProof},p=${proof.toString("base64")}`,
    expectedServerSignature: hmac(hmac(salted, "Server Key"), authMessage).toString("base64"),
  };
}

/** True when server-final is "v=" with the expected signature; false for "e=..." or anything else. */
export function verifyServerFinal(serverFinal: string, expectedServerSignature: string): boolean {
  if (!serverFinal.startsWith("v=")) return false;
  const actual = Buffer.from(serverFinal.slice(2));
  const expected = Buffer.from(expectedServerSignature);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
