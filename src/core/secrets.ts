/**
 * The one vocabulary for secrets: drawing them from a CSPRNG, hashing them for lookups,
 * comparing them in constant time, and masking them for display and logs. Session tokens,
 * enrollment keys, license tokens and generated passwords all go through here.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";

/** `length` characters of `alphabet` from a CSPRNG, without modulo bias (bytes past a multiple of its size are drawn again). */
export function randomFromAlphabet(alphabet: string, length: number): string {
  if (alphabet.length < 2 || alphabet.length > 256) throw new Error("an alphabet needs 2 to 256 characters");
  const limit = 256 - (256 % alphabet.length);
  let out = "";
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) if (b < limit && out.length < length) out += alphabet[b % alphabet.length];
  }
  return out;
}

/** `bytes` random bytes as base64url: session tokens (32 bytes = 256 bits). */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString("base64url");
}

/** `bytes` random bytes as lowercase hex: nonces. */
export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

/** Lowercase hex SHA-256: how a secret is stored and looked up (Bun's one-shot hash, the cheapest). */
export function sha256Hex(text: string | Uint8Array): string {
  return Bun.SHA256.hash(text, "hex");
}

/** Whether two secrets are equal, in time that does not depend on where they differ. */
export function sameSecret(a: string | Uint8Array, b: string | Uint8Array): boolean {
  const x = typeof a === "string" ? Buffer.from(a) : a;
  const y = typeof b === "string" ? Buffer.from(b) : b;
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Enough of a secret to recognise it, never enough to use it: the first `keep` characters, the
 * rest as `•` (separators such as `-` kept, so that a key's shape shows).
 */
export function maskSecret(secret: string, keep = 4): string {
  return secret.slice(0, keep) + secret.slice(keep).replace(/[^-]/g, "•");
}
