/**
 * The agent's certificate identity in its state directory: `client.key` (its private key, 0600,
 * generated here and never sent), `client.pem` (the certificate the server issued for it) and
 * `ca.pem` (the server's root, the only CA the agent trusts for the mTLS listener). The agent
 * uses the certificate while it is valid and issued by that root, and asks for a new one from
 * 2/3 of its lifetime on.
 */
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../core/files.ts";
import { CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, ensureStateDir } from "./config.ts";

export interface Identity {
  certificatePem: string;
  keyPem: string;
  /** The root it was issued by (`ca.pem`). */
  caPem: string;
  /** Upper-case hex, as the server lists it. */
  serial: string;
  commonName: string;
  notBefore: number;
  notAfter: number;
  /** From here on the agent asks for a new certificate: 2/3 of the way through its lifetime. */
  renewAt: number;
}

/** Whether an identity can be used at `now`, and whether it is time to renew it. */
export type IdentityState = { usable: true; renew: boolean } | { usable: false; why: string };

function readText(path: string): string | null {
  return existsSync(path) ? readFileSync(path, "utf8") : null;
}

/**
 * The one certificate a PEM text holds, on its own, with the SHA-256 of its DER (lower-case hex,
 * what `-ca-fingerprint` pins); null when the text holds none, several, or one that does not parse.
 * A root is kept only this way: a second certificate in the text would otherwise be trusted too.
 */
export function soleCertificate(text: string): { pem: string; fingerprint: string } | null {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length !== 1) return null;
  try {
    const certificate = new X509Certificate(blocks[0]!);
    return { pem: certificate.toString(), fingerprint: createHash("sha256").update(certificate.raw).digest("hex") };
  } catch {
    return null;
  }
}

/** The fingerprint of the one certificate in a PEM text (see soleCertificate); null when it is not one certificate. */
export function certificateFingerprint(text: string): string | null {
  return soleCertificate(text)?.fingerprint ?? null;
}

export function readRoot(dir: string): string | null {
  return readText(join(dir, CA_FILE));
}

export function writeRoot(dir: string, pem: string): void {
  ensureStateDir(dir);
  writeFileAtomic(join(dir, CA_FILE), pem, 0o644);
}

function commonNameOf(certificate: X509Certificate): string {
  return /^CN=(.*)$/m.exec(certificate.subject)?.[1] ?? "";
}

/** The public half of a PEM private key, as SPKI DER, to compare with a certificate's. */
function publicKeyDer(keyPem: string): Buffer {
  return createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
}

/**
 * Checks a certificate the server issued against what the agent asked for: parsed, for this key,
 * for this CN, issued by `caPem`. Returns the identity, or why not.
 */
export function checkIssued(
  certificatePem: string,
  keyPem: string,
  caPem: string,
  expectedCommonName?: string,
): { identity: Identity } | { why: string } {
  const leafPem = soleCertificate(certificatePem)?.pem;
  const rootPem = soleCertificate(caPem)?.pem;
  if (leafPem === undefined) return { why: "the certificate is not one PEM certificate" };
  if (rootPem === undefined) return { why: "the root is not one PEM certificate" };
  const certificate = new X509Certificate(leafPem);
  const root = new X509Certificate(rootPem);
  let ownKey: Buffer;
  try {
    ownKey = publicKeyDer(keyPem);
  } catch {
    return { why: "the private key cannot be read" };
  }
  if (!ownKey.equals(certificate.publicKey.export({ type: "spki", format: "der" })))
    return { why: "the certificate is not for this machine's key" };
  if (!certificate.checkIssued(root) || !certificate.verify(root.publicKey))
    return { why: "the certificate was issued by another root CA" };
  const commonName = commonNameOf(certificate);
  if (expectedCommonName !== undefined && commonName !== expectedCommonName)
    return { why: `the certificate is for CN=${commonName}, not ${expectedCommonName}` };
  const notBefore = certificate.validFromDate.getTime();
  const notAfter = certificate.validToDate.getTime();
  return {
    identity: {
      certificatePem: leafPem,
      keyPem,
      caPem: rootPem,
      serial: certificate.serialNumber.toUpperCase(),
      commonName,
      notBefore,
      notAfter,
      renewAt: notBefore + Math.floor(((notAfter - notBefore) * 2) / 3),
    },
  };
}

/** The identity on disk, whatever its state; null when a file is missing or they do not belong together. */
export function loadIdentity(dir: string): { identity: Identity } | { why: string } | null {
  const certificatePem = readText(join(dir, CLIENT_CERT_FILE));
  const keyPem = readText(join(dir, CLIENT_KEY_FILE));
  const caPem = readRoot(dir);
  if (certificatePem === null || keyPem === null || caPem === null) return null;
  return checkIssued(certificatePem, keyPem, caPem);
}

export function identityState(identity: Identity, now: number): IdentityState {
  if (now < identity.notBefore) return { usable: false, why: `it is valid only from ${new Date(identity.notBefore).toISOString()}` };
  if (now >= identity.notAfter) return { usable: false, why: `it expired at ${new Date(identity.notAfter).toISOString()}` };
  return { usable: true, renew: now >= identity.renewAt };
}

/** The identity the agent can present now, or null. */
export function usableIdentity(dir: string, now: number): Identity | null {
  const loaded = loadIdentity(dir);
  if (loaded === null || !("identity" in loaded)) return null;
  return identityState(loaded.identity, now).usable ? loaded.identity : null;
}

/**
 * Stores a new identity: the key first, then the certificate, then the root. A crash in between
 * leaves a key and a certificate that do not match, which `loadIdentity` refuses (the agent then
 * asks for a new certificate), never a certificate presented with the wrong key.
 */
export function storeIdentity(dir: string, identity: Identity): void {
  ensureStateDir(dir);
  writeFileAtomic(join(dir, CLIENT_KEY_FILE), identity.keyPem, 0o600);
  writeFileAtomic(join(dir, CLIENT_CERT_FILE), identity.certificatePem, 0o644);
  writeRoot(dir, identity.caPem);
}

/** Forgets the certificate and its key (refused by the server, or from another root); the root stays. */
export function dropIdentity(dir: string): void {
  rmSync(join(dir, CLIENT_CERT_FILE), { force: true });
  rmSync(join(dir, CLIENT_KEY_FILE), { force: true });
}
