/**
 * Signed license receipts: compact JWS (EdDSA / Ed25519) that an application verifies offline
 * with the server's public key. Claims: iss, app, key (license id), hwid, iat, exp, grace
 * (seconds past exp an app may keep running offline) and nonce (echoed when the client sent one).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";

export interface ReceiptClaims {
  iss: "latchkey";
  app: number;
  key: number;
  hwid: string;
  iat: number;
  exp: number;
  grace: number;
  nonce?: string;
}

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Identifies the key in the JWS header: the first 16 hex digits of the SHA-256 of its SPKI. */
  keyId: string;
  publicKeyPem: string;
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString("base64url");

export function newSigningKeyPem(): string {
  return generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

export function signingKeyFromPem(pem: string): SigningKey {
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const spki = publicKey.export({ type: "spki", format: "der" });
  return {
    privateKey,
    publicKey,
    keyId: createHash("sha256").update(spki).digest("hex").slice(0, 16),
    publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

export function signReceipt(key: SigningKey, claims: ReceiptClaims): string {
  const header = b64url(JSON.stringify({ alg: "EdDSA", typ: "JWT", kid: key.keyId }));
  const payload = b64url(JSON.stringify(claims));
  const signature = sign(null, Buffer.from(`${header}.${payload}`), key.privateKey);
  return `${header}.${payload}.${b64url(signature)}`;
}

export type VerifyResult = { ok: true; claims: ReceiptClaims; warning?: string } | { ok: false; reason: string; claims?: ReceiptClaims };

/** How far a client's clock may run behind the server's before a receipt looks "from the future". */
export const CLOCK_SKEW_SECONDS = 300;

/**
 * Verifies a receipt offline: the signature with the public key, then expiry, a clock set back
 * behind the issue time, and (when given) the machine's hwid.
 */
export function verifyReceipt(
  receipt: string,
  publicKeyPem: string,
  options: { hwid?: string | undefined; nonce?: string | undefined; now?: number; allowGrace?: boolean } = {},
): VerifyResult {
  const parts = receipt.trim().split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p)))
    return { ok: false, reason: "not a compact JWS (three base64url parts)" };
  const [h, p, s] = parts as [string, string, string];
  // The header is untrusted input until the signature is checked: it may parse to null.
  let header: { alg?: unknown } | null;
  let claims: ReceiptClaims;
  try {
    header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
  } catch {
    return { ok: false, reason: "the header or claims are not JSON" };
  }
  if (header?.alg !== "EdDSA") return { ok: false, reason: `unsupported algorithm ${JSON.stringify(header?.alg)}; expected EdDSA` };
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(publicKeyPem);
  } catch {
    return { ok: false, reason: "the public key is not a PEM public key" };
  }
  if (!verify(null, Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, "base64url"))) {
    return { ok: false, reason: "bad signature: the receipt was altered or signed by another server" };
  }
  if (typeof claims.iat !== "number" || typeof claims.exp !== "number" || typeof claims.hwid !== "string") {
    return { ok: false, reason: "the receipt lacks iat, exp or hwid", claims };
  }
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  if (now < claims.iat - CLOCK_SKEW_SECONDS) {
    return { ok: false, reason: `the clock is behind the receipt's issue time (${iso(claims.iat)}): it was set back`, claims };
  }
  if (options.hwid !== undefined && options.hwid !== claims.hwid) {
    return { ok: false, reason: `issued for another machine (hwid ${JSON.stringify(claims.hwid)})`, claims };
  }
  if (options.nonce !== undefined && claims.nonce !== options.nonce) {
    // A receipt that does not echo the nonce the application just sent answers another request: a replay.
    return {
      ok: false,
      reason:
        claims.nonce === undefined
          ? `it echoes no nonce (expected ${JSON.stringify(options.nonce)}): a stored or replayed receipt`
          : `it echoes nonce ${JSON.stringify(claims.nonce)}, not ${JSON.stringify(options.nonce)}: a replayed receipt`,
      claims,
    };
  }
  if (now > claims.exp) {
    const graceEnd = claims.exp + (claims.grace ?? 0);
    if (options.allowGrace && now <= graceEnd)
      return { ok: true, claims, warning: `expired at ${iso(claims.exp)}; within grace until ${iso(graceEnd)}` };
    return { ok: false, reason: `expired at ${iso(claims.exp)}`, claims };
  }
  return { ok: true, claims };
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}
