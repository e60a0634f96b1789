/**
 * What a TLS client's certificate says, as far as latchkey trusts it: verified against the CA's
 * root (each certificate once, cached) and checked for revocation in the database. The mTLS
 * listener makes one per connection, at its handshake.
 */
import type { CertificateRow } from "../../db/certificates.ts";
import type { Clock } from "../clock.ts";
import type { CertificateAuthority } from "./authority.ts";
import type { CertificateVerifier } from "./verify.ts";

export type CertificateIdentity =
  | { kind: "none" }
  | { kind: "invalid"; reason: string }
  | { kind: "valid"; serial: string; fingerprint: string; commonName: string | null; notAfter: number; der: Uint8Array };

/**
 * `verifier` gives the verifier of the current root (one per root, see `clientCertificateVerifier`):
 * it reads the root from the database, hence a promise.
 */
export async function identifyCertificate(
  deps: { verifier: () => Promise<CertificateVerifier>; ca: CertificateAuthority; clock: Clock },
  der: Uint8Array | null,
): Promise<CertificateIdentity> {
  if (der === null) return { kind: "none" };
  const issued = await deps.ca.issuedRecord(der);
  if (issued) return recordIdentity(issued, der, deps.clock());
  const result = await (await deps.verifier()).verify(der, { time: deps.clock() });
  if (!result.ok) return { kind: "invalid", reason: result.reason };
  const known = await deps.ca.byFingerprint(result.leaf.fingerprint);
  if (known?.status === "revoked") return { kind: "invalid", reason: "revoked" };
  return {
    kind: "valid",
    serial: result.leaf.serial,
    fingerprint: result.leaf.fingerprint,
    commonName: result.leaf.cn,
    notAfter: result.leaf.notAfter.getTime(),
    der,
  };
}

/**
 * A certificate this CA issued, judged by its issuance record as the verifier would judge it: the
 * chain is known good (the exact DER, signed by the current root), so what is left is the leaf's
 * use, its validity at `now` and revocation. The reasons are the verifier's.
 */
function recordIdentity(row: CertificateRow, der: Uint8Array, now: number): CertificateIdentity {
  if (!(JSON.parse(row.usages) as string[]).includes("clientAuth")) return { kind: "invalid", reason: "eku" };
  if (now < row.not_before) return { kind: "invalid", reason: "not_yet_valid" };
  if (now > row.not_after) return { kind: "invalid", reason: "expired" };
  if (row.status === "revoked") return { kind: "invalid", reason: "revoked" };
  return { kind: "valid", serial: row.serial, fingerprint: row.fingerprint, commonName: row.common_name, notAfter: row.not_after, der };
}

/** Whether an identity still holds now (a certificate may expire while its connection is open). */
export function stillValid(identity: CertificateIdentity, now: number): identity is Extract<CertificateIdentity, { kind: "valid" }> {
  return identity.kind === "valid" && identity.notAfter > now;
}
