/**
 * The agent's key pair and certificate request (`client/csr`): an ECDSA P-256 key generated with
 * WebCrypto on this machine, and a PKCS#10 request built with PKIjs whose subject is CN = the
 * hostname the agent registered with. Only the request leaves the machine; the private key goes
 * to `client.key` once the certificate for it has come back.
 */
import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

/**
 * Passed to every PKIjs call, rather than set as PKIjs's global engine, as the server's CA does:
 * WebCrypto, whatever another module sets globally.
 */
const engine = new pkijs.CryptoEngine({ name: "latchkey-client", crypto: globalThis.crypto });

const COMMON_NAME = "2.5.4.3";

export type PemLabel = "CERTIFICATE REQUEST" | "PRIVATE KEY";

/** DER as PEM: base64 in lines of 64 characters between BEGIN/END lines, ending with a newline. */
export function toPem(label: PemLabel, der: ArrayBuffer | Uint8Array): string {
  const base64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString("base64");
  return `-----BEGIN ${label}-----\n${base64.replace(/.{64}(?=.)/g, "$&\n")}\n-----END ${label}-----\n`;
}

export interface CertificateRequest {
  /** The request, PEM (`-----BEGIN CERTIFICATE REQUEST-----`), for `client/csr`. */
  csrPem: string;
  /** Its private key, PKCS#8 PEM: for `client.key` only, never for the network. */
  keyPem: string;
}

/** A new key pair and a request signed with it, for CN = `commonName`. */
export async function createCertificateRequest(commonName: string): Promise<CertificateRequest> {
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const request = new pkijs.CertificationRequest();
  request.version = 0;
  request.subject.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({ type: COMMON_NAME, value: new asn1js.Utf8String({ value: commonName }) }),
  );
  // RFC 2986 has no optional attributes: an empty set, not none (PKIjs leaves it out when unset).
  request.attributes = [];
  await request.subjectPublicKeyInfo.importKey(keys.publicKey, engine);
  await request.sign(keys.privateKey, "SHA-256", engine);
  const der = request.toSchema(true).toBER(false);
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { csrPem: toPem("CERTIFICATE REQUEST", der), keyPem: toPem("PRIVATE KEY", pkcs8) };
}
