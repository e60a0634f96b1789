/**
 * Public keys as sysadm clients spell them, and proofs of their private keys over a challenge
 * (`rpc/auth_ssl`, SPEC §3).
 *
 * A `pub_key` is base64 of a PEM public key (what the original sysadm client sends: Qt's
 * `publicKey().toPem()`), or base64 of a DER SubjectPublicKeyInfo; a PEM text itself is taken too.
 * Every spelling is reduced to one canonical SubjectPublicKeyInfo, whose SHA-256 names the key.
 *
 * A proof is over the exact bytes of the test string: a SHA-256 signature (RSA PKCS#1 v1.5,
 * RSA-PSS with a salt as long as the digest or as long as possible, ECDSA on P-256 or P-384 in DER
 * or as raw r||s, Ed25519), or the original sysadm form, RSA PKCS#1 v1.5 "private encrypt" of the
 * raw string (`openssl pkeyutl -sign` without a digest), checked by decrypting it with the public
 * key and comparing in constant time.
 */
import { constants, createHash, createPublicKey, publicDecrypt, verify, type KeyObject } from "node:crypto";
import { describePublicKey, pemBlocks } from "./ca/x509.ts";
import { badRequest } from "./errors.ts";
import { sameSecret, sha256Hex } from "./secrets.ts";

/** A public key reduced to its canonical form. */
export interface CanonicalKey {
  /** DER SubjectPublicKeyInfo, as node:crypto exports it. */
  spki: Uint8Array;
  /** SHA-256 of `spki`, lowercase hex: the key's name, whatever its spelling. */
  keyId: string;
  /** `rsa-2048`, `ec-P-256`, `ec-P-384` or `ed25519`. */
  type: string;
}

/** Keys a certificate login can prove: RSA of 2048 to 16384 bits, EC P-256 and P-384, Ed25519. */
export function canonicalKey(spki: Uint8Array, field: string): CanonicalKey {
  const described = describePublicKey(spki, field);
  if (described.type === "ec" && described.curve === "P-521") {
    throw badRequest("is an EC P-521 key; certificate login takes RSA, EC P-256 or P-384, or Ed25519 keys", field);
  }
  const der = new Uint8Array(
    createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }).export({ type: "spki", format: "der" }),
  );
  const type = described.type === "rsa" ? `rsa-${described.bits}` : described.type === "ec" ? `ec-${described.curve}` : "ed25519";
  return { spki: der, keyId: sha256Hex(der), type };
}

const PUBLIC_LABELS = new Set(["PUBLIC KEY", "RSA PUBLIC KEY"]);

/**
 * The key a `pub_key` names: base64 of a PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`), base64
 * of a DER SubjectPublicKeyInfo, or the PEM itself. A private key is refused, never read.
 */
export function parsePubKey(pubKey: string, field = "pub_key"): CanonicalKey {
  const text = pubKey.includes("-----BEGIN") ? pubKey : Buffer.from(pubKey.replace(/\s/g, ""), "base64").toString("latin1");
  if (!text.includes("-----BEGIN")) {
    return canonicalKey(
      spkiOf(() => createPublicKey({ key: Buffer.from(text, "latin1"), format: "der", type: "spki" }), field),
      field,
    );
  }
  const blocks = pemBlocks(text);
  if (blocks.some((b) => b.label.includes("PRIVATE KEY"))) {
    throw badRequest("holds a private key: give the public key only (openssl pkey -pubout), and keep the private key to yourself", field);
  }
  const block = blocks.find((b) => PUBLIC_LABELS.has(b.label));
  if (!block) throw badRequest("must be base64 of a PEM public key (-----BEGIN PUBLIC KEY-----) or of a DER SubjectPublicKeyInfo", field);
  const type = block.label === "RSA PUBLIC KEY" ? "pkcs1" : "spki";
  return canonicalKey(
    spkiOf(() => createPublicKey({ key: Buffer.from(block.der), format: "der", type }), field),
    field,
  );
}

function spkiOf(read: () => KeyObject, field: string): Uint8Array {
  try {
    return new Uint8Array(read().export({ type: "spki", format: "der" }));
  } catch {
    throw badRequest("is not a public key: give base64 of a PEM public key or of a DER SubjectPublicKeyInfo", field);
  }
}

/** The `pub_key` the original sysadm server would store for a key: base64 of its PEM. */
export function sysadmPubKey(spki: Uint8Array): string {
  const base64 = Buffer.from(spki).toString("base64");
  const pem = `-----BEGIN PUBLIC KEY-----\n${base64.replace(/.{64}(?=.)/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  return Buffer.from(pem).toString("base64");
}

/** `list_ssl_checksums`: base64 of the MD5 of the key bytes the client sent (its base64-decoded `pub_key`), as sysadm computes it. */
export function pubKeyChecksum(pubKey: string): string {
  return createHash("md5")
    .update(Buffer.from(pubKey.replace(/\s/g, ""), "base64"))
    .digest("base64");
}

export type ProofKind = "rsa-pkcs1-sha256" | "rsa-pss-sha256" | "rsa-private-encrypt" | "ecdsa-sha256" | "ed25519";

const SHA256_BYTES = 32;

/** A public key ready for checking proofs, with what decides which proofs could be its. */
export interface ProofKey {
  key: KeyObject;
  /** RSA: the modulus in bytes (every RSA proof is exactly that long). */
  rsaBytes: number | null;
  /** EC: the curve's coordinate size in bytes (32 for P-256, 48 for P-384). */
  ecBytes: number | null;
  ed25519: boolean;
}

export function proofKey(spki: Uint8Array): ProofKey {
  const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  const details = key.asymmetricKeyDetails ?? {};
  const curve = details.namedCurve;
  return {
    key,
    rsaBytes: key.asymmetricKeyType === "rsa" ? Math.ceil((details.modulusLength ?? 0) / 8) : null,
    ecBytes: key.asymmetricKeyType === "ec" ? (curve === "prime256v1" ? 32 : curve === "secp384r1" ? 48 : null) : null,
    ed25519: key.asymmetricKeyType === "ed25519",
  };
}

/** Whether `proof` has a length some proof by this key could have: cheap, so that a login need not try every key. */
export function couldProve(key: ProofKey, proof: Uint8Array): boolean {
  if (key.rsaBytes !== null) return proof.length === key.rsaBytes;
  // DER: SEQUENCE { INTEGER r, INTEGER s }, each at most one byte longer than a coordinate.
  if (key.ecBytes !== null) return proof.length === 2 * key.ecBytes || (proof[0] === 0x30 && proof.length <= 2 * key.ecBytes + 8);
  return key.ed25519 && proof.length === 64;
}

/** Which kind of proof by `key` over `message` this is, or null when it is none. */
export function checkProof(key: ProofKey, message: Uint8Array, proof: Uint8Array): ProofKind | null {
  if (!couldProve(key, proof)) return null;
  const attempt = (check: () => boolean): boolean => {
    try {
      return check();
    } catch {
      return false;
    }
  };
  if (key.ed25519) return attempt(() => verify(null, message, key.key, proof)) ? "ed25519" : null;
  if (key.ecBytes !== null) {
    // Raw r||s is exactly twice the coordinate size; DER is a SEQUENCE (0x30), which a raw one may also start with.
    const encodings: ("ieee-p1363" | "der")[] = [];
    if (proof.length === 2 * key.ecBytes) encodings.push("ieee-p1363");
    if (proof[0] === 0x30) encodings.push("der");
    const ok = encodings.some((dsaEncoding) => attempt(() => verify("sha256", message, { key: key.key, dsaEncoding }, proof)));
    return ok ? "ecdsa-sha256" : null;
  }
  const rsaBytes = key.rsaBytes!;
  if (attempt(() => verify("sha256", message, key.key, proof))) return "rsa-pkcs1-sha256";
  // RSA-PSS (RFC 8017 §9.1): the salt as long as the digest, or as long as the encoded message allows.
  const modulusBits = (key.key.asymmetricKeyDetails?.modulusLength ?? rsaBytes * 8) - 1;
  const maxSalt = Math.ceil(modulusBits / 8) - SHA256_BYTES - 2;
  for (const saltLength of new Set([SHA256_BYTES, maxSalt])) {
    const padding = constants.RSA_PKCS1_PSS_PADDING;
    if (attempt(() => verify("sha256", message, { key: key.key, padding, saltLength }, proof))) return "rsa-pss-sha256";
  }
  const decrypted = (() => {
    try {
      return publicDecrypt({ key: key.key, padding: constants.RSA_PKCS1_PADDING }, proof);
    } catch {
      return null;
    }
  })();
  return decrypted !== null && sameSecret(decrypted, message) ? "rsa-private-encrypt" : null;
}
