/**
 * What a TLS client's certificate says, as far as latchkey trusts it: verified against the CA's
 * root (each certificate once, cached) and checked for revocation in the database. The mTLS
 * listener makes one per connection, at its handshake.
 */
import type { Clock } from "../clock.ts";
import type { CertificateAuthority } from "./authority.ts";
import type { CertificateVerifier } from "./verify.ts";

export type CertificateIdentity =
  | { kind: "none" }
  | { kind: "invalid"; reason: string }
  | { kind: "valid"; serial: string; fingerprint: string; commonName: string | null; notAfter: number; der: Uint8Array };

export async function identifyCertificate(
  deps: { verifier: () => CertificateVerifier; ca: CertificateAuthority; clock: Clock },
  der: Uint8Array | null,
): Promise<CertificateIdentity> {
  if (der === null) return { kind: "none" };
  const result = await deps.verifier().verify(der, { time: deps.clock() });
  if (!result.ok) return { kind: "invalid", reason: result.reason };
  const known = deps.ca.byFingerprint(result.leaf.fingerprint);
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

/** Whether an identity still holds now (a certificate may expire while its connection is open). */
export function stillValid(identity: CertificateIdentity, now: number): identity is Extract<CertificateIdentity, { kind: "valid" }> {
  return identity.kind === "valid" && identity.notAfter > now;
}
