/**
 * X.509 building for the built-in CA (SPEC §5, §9): the root certificate, leaf certificates, CRLs,
 * PEM/DER, fingerprints, and the checks on an imported root and its key. This is the only module
 * that builds with PKIjs/asn1js; everything else sees PEM text, DER bytes and plain objects.
 *
 * Keys are WebCrypto keys (ECDSA P-256 with SHA-256 for what latchkey generates). node:crypto is
 * used only where WebCrypto has no answer: reading the SEC1 and PKCS#1 key files `openssl` writes,
 * and comparing a private key's public half with a certificate's.
 */
import * as asn1js from "asn1js";
import { createHash, createPrivateKey, createPublicKey, verify as verifySignature, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import * as pkijs from "pkijs";
import * as v from "valibot";
import { badRequest } from "../errors.ts";
import { hostname as hostnameSchema } from "../fields.ts";
import { sha256Hex } from "../secrets.ts";

/**
 * Passed to every PKIjs call that signs or imports a key, rather than set as PKIjs's global engine,
 * so that no other module's engine setting can change what this one signs with.
 */
const engine = new pkijs.CryptoEngine({ name: "latchkey", crypto: globalThis.crypto });

const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  crlNumber: "2.5.29.20",
  crlReason: "2.5.29.21",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
} as const;

/** Extended key usages latchkey issues. */
export type ExtendedUsage = "serverAuth" | "clientAuth";
const EKU_OID: Record<ExtendedUsage, string> = { serverAuth: "1.3.6.1.5.5.7.3.1", clientAuth: "1.3.6.1.5.5.7.3.2" };
const EKU_NAME: Record<string, string> = {
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  "2.5.29.37.0": "anyExtendedKeyUsage",
};

/** RFC 5280 §4.2.1.3, in bit order. */
const KEY_USAGE_BITS = [
  "digitalSignature",
  "nonRepudiation",
  "keyEncipherment",
  "dataEncipherment",
  "keyAgreement",
  "keyCertSign",
  "cRLSign",
  "encipherOnly",
  "decipherOnly",
] as const;
export type KeyUsage = (typeof KEY_USAGE_BITS)[number];

/** CRL reason codes (RFC 5280 §5.3.1) an operator may give; the CA-level and hold codes are not latchkey's to use. */
export const REVOCATION_REASONS = [
  "unspecified",
  "keyCompromise",
  "affiliationChanged",
  "superseded",
  "cessationOfOperation",
  "privilegeWithdrawn",
] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];
const REASON_CODE: Record<RevocationReason, number> = {
  unspecified: 0,
  keyCompromise: 1,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  privilegeWithdrawn: 9,
};

/** Leaves start this far in the past, so that a client whose clock runs a little behind accepts them. */
export const CLOCK_SKEW_MS = 5 * 60_000;
const DAY_MS = 86_400_000;

// PEM and DER

export type PemLabel = "CERTIFICATE" | "CERTIFICATE REQUEST" | "PRIVATE KEY" | "PUBLIC KEY" | "X509 CRL";

/** DER as PEM: base64 in lines of 64 characters between BEGIN/END lines, ending with a newline. */
export function toPem(label: PemLabel, der: Uint8Array): string {
  const base64 = Buffer.from(der).toString("base64");
  return `-----BEGIN ${label}-----\n${base64.replace(/.{64}(?=.)/g, "$&\n")}\n-----END ${label}-----\n`;
}

/** Every PEM block in `text`, in order (text around and between blocks is ignored, as openssl does). */
export function pemBlocks(text: string): { label: string; der: Uint8Array }[] {
  const blocks: { label: string; der: Uint8Array }[] = [];
  for (const m of text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g)) {
    const body = m[2]!;
    // Headers such as `Proc-Type: 4,ENCRYPTED` mark a legacy encrypted key; keep them out of the base64.
    const headers = /^[\s]*[A-Za-z-]+:/.test(body);
    const base64 = body.replace(/\s/g, "");
    if (headers || !/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) {
      blocks.push({ label: headers ? `${m[1]!} (encrypted)` : m[1]!, der: new Uint8Array() });
      continue;
    }
    blocks.push({ label: m[1]!, der: new Uint8Array(Buffer.from(base64, "base64")) });
  }
  return blocks;
}

/** The DER of the one certificate in a PEM text; bad_request (about `field`) when there is none or several. */
export function certificateDer(pem: string, field = "certificate"): Uint8Array {
  const certs = pemBlocks(pem).filter((b) => b.label === "CERTIFICATE");
  if (certs.length === 0) throw badRequest("must be a PEM certificate (-----BEGIN CERTIFICATE-----)", field);
  if (certs.length > 1) throw badRequest(`holds ${certs.length} certificates; give exactly one`, field);
  return certs[0]!.der;
}

export const certificatePem = (der: Uint8Array): string => toPem("CERTIFICATE", der);
export const publicKeyPem = (spki: Uint8Array): string => toPem("PUBLIC KEY", spki);
export const crlPem = (der: Uint8Array): string => toPem("X509 CRL", der);

/** The SubjectPublicKeyInfo DER of a `PUBLIC KEY` PEM; bad_request (about `field`) otherwise. */
export function publicKeyDer(pem: string, field = "public_key"): Uint8Array {
  const block = pemBlocks(pem).find((b) => b.label === "PUBLIC KEY");
  if (!block) throw badRequest("must be a PEM public key (-----BEGIN PUBLIC KEY-----)", field);
  return block.der;
}

// Fingerprints

/** SHA-256 of a certificate's DER, lowercase hex: how latchkey names and pins a certificate. */
export function fingerprint(der: Uint8Array): string {
  return sha256Hex(der);
}

/** A hex fingerprint the way `openssl x509 -fingerprint -sha256` prints it: `AA:BB:...`. */
export function colonFingerprint(hex: string): string {
  return hex.toUpperCase().replace(/(..)(?=.)/g, "$1:");
}

/** A SHA-256 fingerprint typed either way (hex, or colon-separated), as lowercase hex; null when it is not one. */
export function normalizeFingerprint(input: string): string | null {
  const hex = input.trim().replace(/:/g, "").toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
}

/** A serial number typed as hex (any case, with or without colons, with leading zeros or not), as latchkey stores it. */
export function normalizeSerial(input: string): string | null {
  const hex = input.trim().replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{1,80}$/.test(hex)) return null;
  const trimmed = hex.replace(/^(00)+(?=..)/, "");
  return trimmed.length % 2 === 1 ? `0${trimmed}` : trimmed;
}

// Names and addresses

/** IPv4 or IPv6 text as the 4 or 16 bytes a SubjectAltName iPAddress holds; null when it is not an address. */
export function ipToBytes(text: string): Uint8Array | null {
  const kind = isIP(text);
  if (kind === 4) return Uint8Array.from(text.split(".").map(Number));
  if (kind !== 6 || text.includes("%")) return null;
  let s = text;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    s = s.slice(0, v4.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = s.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    bytes[2 * i] = n >> 8;
    bytes[2 * i + 1] = n & 0xff;
  });
  return bytes;
}

/** 4 or 16 bytes as address text: dotted IPv4, or IPv6 in the RFC 5952 form (lowercase, longest zero run as `::`). */
export function ipFromBytes(bytes: Uint8Array): string | null {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) return null;
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let best = { start: -1, length: 1 };
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.length) best = { start: i, length: j - i };
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.start < 0) return hex.join(":");
  return `${hex.slice(0, best.start).join(":")}::${hex.slice(best.start + best.length).join(":")}`;
}

/**
 * Subject alternative names typed as text, sorted out into DNS names (lower-cased, RFC 1123) and IP
 * addresses (canonical text), without duplicates and in the order given; bad_request for anything else.
 */
export function parseSans(sans: readonly string[], field = "sans"): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const san of sans) {
    const ip = ipToBytes(san);
    if (ip) {
      const text = ipFromBytes(ip)!;
      if (!ipAddresses.includes(text)) ipAddresses.push(text);
      continue;
    }
    if (!v.safeParse(hostnameSchema, san).success)
      throw badRequest(`${JSON.stringify(san)} is neither a DNS name nor an IP address`, field);
    const name = san.toLowerCase();
    if (!dnsNames.includes(name)) dnsNames.push(name);
  }
  return { dnsNames, ipAddresses };
}

function checkNameText(text: string, what: string, field: string): void {
  if (text.length === 0 || text.length > 64) throw badRequest(`${what} must be 1 to 64 characters`, field);
  if (/[\p{Cc}\p{Cf}]/u.test(text)) throw badRequest(`${what} may not hold control or format characters`, field);
}

/**
 * A Name with one attribute per RDN (`O=…, CN=…`). PKIjs puts every attribute it is given into one
 * multi-valued RDN (`O=… + CN=…`), so the sequence is built here and handed to it as DER.
 */
function distinguishedName(parts: { oid: string; value: string }[]): pkijs.RelativeDistinguishedNames {
  const rdns = parts.map(
    (p) =>
      new asn1js.Set({
        value: [new pkijs.AttributeTypeAndValue({ type: p.oid, value: new asn1js.Utf8String({ value: p.value }) }).toSchema()],
      }),
  );
  return pkijs.RelativeDistinguishedNames.fromBER(new asn1js.Sequence({ value: rdns }).toBER(false));
}

function attribute(name: pkijs.RelativeDistinguishedNames, oid: string): string | null {
  const found = name.typesAndValues.find((t) => t.type === oid)?.value as { valueBlock?: { value?: unknown } } | undefined;
  const value = found?.valueBlock?.value;
  return typeof value === "string" ? value : null;
}

// Keys

export type KeyType = "ec" | "rsa" | "ed25519";

export interface PublicKeyDescription {
  type: KeyType;
  /** `P-256`, `P-384` or `P-521` for EC keys. */
  curve?: string;
  /** The modulus length of RSA keys. */
  bits?: number;
}

const CURVES: Record<string, string> = { prime256v1: "P-256", secp384r1: "P-384", secp521r1: "P-521" };

function describeKey(key: KeyObject): PublicKeyDescription | null {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec": {
      const curve = CURVES[details.namedCurve ?? ""];
      return curve ? { type: "ec", curve } : null;
    }
    case "rsa":
      return { type: "rsa", bits: details.modulusLength ?? 0 };
    case "ed25519":
      return { type: "ed25519" };
    default:
      return null;
  }
}

/**
 * What kind of key a SubjectPublicKeyInfo holds, for a leaf certificate: EC P-256/P-384/P-521,
 * RSA of 2048 to 16384 bits, or Ed25519; bad_request (about `field`) for anything else.
 */
export function describePublicKey(spki: Uint8Array, field = "public_key"): PublicKeyDescription {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  } catch {
    throw badRequest("is not a valid public key (DER SubjectPublicKeyInfo)", field);
  }
  const described = describeKey(key);
  if (!described) throw badRequest("must be an EC (P-256, P-384, P-521), RSA or Ed25519 public key", field);
  if (described.type === "rsa" && (described.bits! < 2048 || described.bits! > 16384)) {
    throw badRequest(`is a ${described.bits}-bit RSA key; RSA keys must have 2048 to 16384 bits`, field);
  }
  return described;
}

/** A fresh ECDSA P-256 key pair: its SubjectPublicKeyInfo DER, and the private key as a PKCS#8 PEM. */
export async function generateKeyPair(): Promise<{ spki: Uint8Array; keyPem: string }> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return { spki, keyPem: toPem("PRIVATE KEY", pkcs8) };
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(info: pkijs.PublicKeyInfo): Uint8Array {
  return new Uint8Array(createHash("sha1").update(info.subjectPublicKey.valueBlock.valueHexView).digest());
}

function spkiDer(info: pkijs.PublicKeyInfo): Uint8Array {
  return new Uint8Array(info.toSchema().toBER(false));
}

// Certificates

/** Parses a certificate and reads it; bad_request when either fails (a malformed extension included). */
function openCertificate(der: Uint8Array, field = "certificate"): { cert: pkijs.Certificate; info: CertificateInfo } {
  try {
    const cert = pkijs.Certificate.fromBER(new Uint8Array(der));
    return { cert, info: describeCertificate(cert, der) };
  } catch {
    throw badRequest("is not a valid X.509 certificate", field);
  }
}

/** An X.509 time for a date: UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5), in whole seconds. */
function x509Time(date: Date): pkijs.Time {
  const value = new Date(Math.floor(date.getTime() / 1000) * 1000);
  return new pkijs.Time({ type: value.getUTCFullYear() >= 2050 ? 1 : 0, value });
}

/** A positive serial of 127 random bits in 16 bytes, never zero and without a leading zero byte (so its DER is minimal). */
function randomSerial(): Uint8Array {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes;
}

function serialHex(serial: asn1js.Integer): string {
  return normalizeSerial(Buffer.from(serial.valueBlock.valueHexView).toString("hex"))!;
}

/** A serial in latchkey's hex form as a DER INTEGER, positive (a zero byte goes before a high first bit). */
function serialInteger(hex: string): asn1js.Integer {
  const bytes = Buffer.from(hex, "hex");
  return new asn1js.Integer({ valueHex: bytes[0]! & 0x80 ? Buffer.concat([Buffer.of(0), bytes]) : bytes });
}

function extension(oid: string, critical: boolean, value: asn1js.BaseBlock | { toSchema(): asn1js.BaseBlock }): pkijs.Extension {
  const schema = "toSchema" in value ? value.toSchema() : value;
  return new pkijs.Extension({ extnID: oid, critical, extnValue: schema.toBER(false) });
}

/** A KeyUsage BIT STRING in DER: trailing zero bits are not encoded (X.690 §11.2.2). */
function keyUsageBits(usages: KeyUsage[]): asn1js.BitString {
  const bits = usages.map((u) => KEY_USAGE_BITS.indexOf(u));
  const last = Math.max(...bits);
  const bytes = new Uint8Array((last >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return new asn1js.BitString({ valueHex: bytes, unusedBits: 7 - (last & 7) });
}

/** What latchkey reads from a certificate. */
export interface CertificateInfo {
  /** Lowercase hex, without leading zero bytes. */
  serial: string;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprint: string;
  commonName: string | null;
  organization: string | null;
  issuerCommonName: string | null;
  /** Subject and issuer names are the same (a root, when its signature also checks out). */
  selfIssued: boolean;
  dnsNames: string[];
  ipAddresses: string[];
  notBefore: Date;
  notAfter: Date;
  /** BasicConstraints CA:TRUE. */
  isCA: boolean;
  /** Null when the certificate has no KeyUsage extension (any use, RFC 5280 §4.2.1.3). */
  keyUsage: KeyUsage[] | null;
  /** Known purposes by name (`serverAuth`, `clientAuth`, ...), others by OID; null without the extension. */
  extendedKeyUsage: string[] | null;
  /** The SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  subjectKeyIdentifier: string | null;
}

function describeCertificate(cert: pkijs.Certificate, der: Uint8Array): CertificateInfo {
  const ext = (oid: string) => cert.extensions?.find((e) => e.extnID === oid)?.parsedValue;
  const san: pkijs.AltName | undefined = ext(OID.subjectAltName);
  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  for (const name of san?.altNames ?? []) {
    if (name.type === 2 && typeof name.value === "string") dnsNames.push(name.value);
    if (name.type === 7 && name.value instanceof asn1js.OctetString) {
      const ip = ipFromBytes(name.value.valueBlock.valueHexView);
      if (ip) ipAddresses.push(ip);
    }
  }
  const basic: pkijs.BasicConstraints | undefined = ext(OID.basicConstraints);
  const ku: asn1js.BitString | undefined = ext(OID.keyUsage);
  const eku: pkijs.ExtKeyUsage | undefined = ext(OID.extKeyUsage);
  const ski: asn1js.OctetString | undefined = ext(OID.subjectKeyIdentifier);
  let keyUsage: KeyUsage[] | null = null;
  if (ku instanceof asn1js.BitString) {
    const bytes = ku.valueBlock.valueHexView;
    keyUsage = KEY_USAGE_BITS.filter((_, i) => ((bytes[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0);
  }
  return {
    serial: serialHex(cert.serialNumber),
    fingerprint: fingerprint(der),
    commonName: attribute(cert.subject, OID.commonName),
    organization: attribute(cert.subject, OID.organization),
    issuerCommonName: attribute(cert.issuer, OID.commonName),
    selfIssued: cert.issuer.isEqual(cert.subject),
    dnsNames,
    ipAddresses,
    notBefore: cert.notBefore.value,
    notAfter: cert.notAfter.value,
    isCA: basic instanceof pkijs.BasicConstraints && basic.cA === true,
    keyUsage,
    extendedKeyUsage: eku instanceof pkijs.ExtKeyUsage ? eku.keyPurposes.map((oid) => EKU_NAME[oid] ?? oid) : null,
    publicKey: spkiDer(cert.subjectPublicKeyInfo),
    subjectKeyIdentifier: ski instanceof asn1js.OctetString ? Buffer.from(ski.valueBlock.valueHexView).toString("hex") : null,
  };
}

/** Reads a certificate given as PEM or DER; bad_request when it is not one. */
export function readCertificate(pemOrDer: string | Uint8Array): CertificateInfo {
  return openCertificate(typeof pemOrDer === "string" ? certificateDer(pemOrDer) : pemOrDer).info;
}

/** A certificate as it leaves the builder. */
export interface BuiltCertificate {
  der: Uint8Array;
  pem: string;
  info: CertificateInfo;
}

async function finish(cert: pkijs.Certificate, key: CryptoKey, hash: string): Promise<BuiltCertificate> {
  await cert.sign(key, hash, engine);
  const der = new Uint8Array(cert.toSchema(true).toBER(false));
  // Described from the object just signed: what it encodes is what it holds, and a parse back costs ~2 ms (PKIjs).
  return { der, pem: certificatePem(der), info: describeCertificate(cert, der) };
}

export interface RootOptions {
  /** The subject's O; none when empty. */
  organization: string;
  now: Date;
  /** 10 unless given. */
  years?: number;
}

/**
 * A new self-signed root CA: ECDSA P-256 / SHA-256, subject `O=<organization>, CN=latchkey root CA`,
 * BasicConstraints critical CA:TRUE pathlen:0 (latchkey issues leaves only), KeyUsage critical
 * keyCertSign + cRLSign, a SubjectKeyIdentifier, valid from five minutes before `now` for ten years.
 * Returns the certificate and its private key as a PKCS#8 PEM (for the store, nowhere else).
 */
export async function createRootCertificate(options: RootOptions): Promise<BuiltCertificate & { keyPem: string }> {
  if (options.organization) checkNameText(options.organization, "the organization", "organization");
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const name = distinguishedName([
    ...(options.organization ? [{ oid: OID.organization, value: options.organization }] : []),
    { oid: OID.commonName, value: "latchkey root CA" },
  ]);
  const notAfter = new Date(options.now);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + (options.years ?? 10));
  const cert = new pkijs.Certificate({
    version: 2,
    serialNumber: new asn1js.Integer({ valueHex: randomSerial() }),
    issuer: name,
    subject: name,
    notBefore: x509Time(new Date(options.now.getTime() - CLOCK_SKEW_MS)),
    notAfter: x509Time(notAfter),
  });
  await cert.subjectPublicKeyInfo.importKey(pair.publicKey, engine);
  cert.extensions = [
    extension(OID.basicConstraints, true, new pkijs.BasicConstraints({ cA: true, pathLenConstraint: 0 })),
    extension(OID.keyUsage, true, keyUsageBits(["keyCertSign", "cRLSign"])),
    extension(OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: keyIdentifier(cert.subjectPublicKeyInfo) })),
  ];
  const built = await finish(cert, pair.privateKey, "SHA-256");
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  return { ...built, keyPem: toPem("PRIVATE KEY", pkcs8) };
}

/** What a leaf certificate says; the CA adds the rest. */
export interface LeafTemplate {
  commonName: string;
  /** DNS names and IP addresses, as `parseSans` takes them. */
  sans: readonly string[];
  usages: readonly ExtendedUsage[];
  /** The subject's SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  now: Date;
  /** Validity after `now`; the certificate starts CLOCK_SKEW_MS before `now` and never outlives the root. */
  days: number;
}

/** A revoked certificate as a CRL lists it. */
export interface CrlEntry {
  serial: string;
  revokedAt: Date;
  reason: RevocationReason | null;
}

/**
 * The root's signing key with what issuing needs from its certificate (name, key identifier,
 * validity). The key is a non-extractable WebCrypto key held in a private field: it signs, and
 * nothing can read it back out of this object.
 */
export class CaSigner {
  readonly #key: CryptoKey;
  readonly #hash: string;
  readonly #name: pkijs.RelativeDistinguishedNames;
  readonly #keyId: Uint8Array;
  readonly info: CertificateInfo;

  private constructor(key: CryptoKey, hash: string, cert: pkijs.Certificate, info: CertificateInfo) {
    this.#key = key;
    this.#hash = hash;
    this.#name = cert.subject;
    const ski = info.subjectKeyIdentifier;
    // The leaves' AuthorityKeyIdentifier must equal the root's own SKI, however an imported root computed it.
    this.#keyId = ski ? new Uint8Array(Buffer.from(ski, "hex")) : keyIdentifier(cert.subjectPublicKeyInfo);
    this.info = info;
  }

  /**
   * Loads a root stored by latchkey: its certificate PEM and its PKCS#8 key PEM (as
   * `checkCaImport` or `createRootCertificate` wrote them).
   */
  static async load(certPem: string, keyPem: string): Promise<CaSigner> {
    const der = certificateDer(certPem);
    const { cert, info } = openCertificate(der);
    const block = pemBlocks(keyPem).find((b) => b.label === "PRIVATE KEY");
    if (!block) throw new Error("the stored CA key is not a PKCS#8 PEM");
    const keyObject = createPrivateKey({ key: Buffer.from(block.der), format: "der", type: "pkcs8" });
    const { algorithm, hash } = signingAlgorithm(describeKey(keyObject));
    const key = await crypto.subtle.importKey("pkcs8", new Uint8Array(block.der), algorithm, false, ["sign"]);
    return new CaSigner(key, hash, cert, info);
  }

  /**
   * Issues a leaf: subject CN, SubjectAltName (DNS names and IP addresses), BasicConstraints
   * critical CA:FALSE, KeyUsage critical digitalSignature (plus keyEncipherment for RSA keys), the
   * template's extended key usages, AuthorityKeyIdentifier and SubjectKeyIdentifier, a fresh random
   * serial; valid from CLOCK_SKEW_MS before `now` for `days`, cut at the root's notAfter.
   */
  async issue(template: LeafTemplate): Promise<BuiltCertificate> {
    checkNameText(template.commonName, "the common name", "common_name");
    if (template.usages.length === 0) throw badRequest("name at least one extended key usage", "usages");
    if (!Number.isInteger(template.days) || template.days < 1) throw badRequest("must be a whole number of days, at least 1", "days");
    const { dnsNames, ipAddresses } = parseSans(template.sans);
    const key = describePublicKey(template.publicKey);
    const now = template.now.getTime();
    if (now >= this.info.notAfter.getTime()) throw badRequest(`the root CA expired on ${this.info.notAfter.toISOString()}`);
    const notAfter = Math.min(now + template.days * DAY_MS, this.info.notAfter.getTime());
    const spki = pkijs.PublicKeyInfo.fromBER(new Uint8Array(template.publicKey));
    const cert = new pkijs.Certificate({
      version: 2,
      serialNumber: new asn1js.Integer({ valueHex: randomSerial() }),
      issuer: this.#name,
      subject: distinguishedName([{ oid: OID.commonName, value: template.commonName }]),
      notBefore: x509Time(new Date(now - CLOCK_SKEW_MS)),
      notAfter: x509Time(new Date(notAfter)),
      subjectPublicKeyInfo: spki,
    });
    const altNames = [
      ...dnsNames.map((name) => new pkijs.GeneralName({ type: 2, value: name })),
      ...ipAddresses.map((ip) => new pkijs.GeneralName({ type: 7, value: new asn1js.OctetString({ valueHex: ipToBytes(ip)! }) })),
    ];
    const usages = [...new Set(template.usages)];
    cert.extensions = [
      extension(OID.basicConstraints, true, new pkijs.BasicConstraints({ cA: false })),
      extension(OID.keyUsage, true, keyUsageBits(key.type === "rsa" ? ["digitalSignature", "keyEncipherment"] : ["digitalSignature"])),
      extension(OID.extKeyUsage, false, new pkijs.ExtKeyUsage({ keyPurposes: usages.map((u) => EKU_OID[u]) })),
      extension(
        OID.authorityKeyIdentifier,
        false,
        new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: this.#keyId }) }),
      ),
      extension(OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: keyIdentifier(spki) })),
    ];
    // RFC 5280 §4.2.1.6: a SubjectAltName with no names is not allowed; a certificate without names simply has none.
    if (altNames.length) cert.extensions.push(extension(OID.subjectAltName, false, new pkijs.AltName({ altNames })));
    return finish(cert, this.#key, this.#hash);
  }

  /**
   * A v2 CRL signed by the root: thisUpdate, nextUpdate, the CRL number and AuthorityKeyIdentifier
   * extensions, and each revoked serial with its date and (unless unspecified) its reason code.
   */
  async crl(input: {
    number: number;
    thisUpdate: Date;
    nextUpdate: Date;
    entries: readonly CrlEntry[];
  }): Promise<{ der: Uint8Array; pem: string }> {
    const crl = new pkijs.CertificateRevocationList({
      version: 1,
      issuer: this.#name,
      thisUpdate: x509Time(input.thisUpdate),
      nextUpdate: x509Time(input.nextUpdate),
      crlExtensions: new pkijs.Extensions({
        extensions: [
          extension(
            OID.authorityKeyIdentifier,
            false,
            new pkijs.AuthorityKeyIdentifier({ keyIdentifier: new asn1js.OctetString({ valueHex: this.#keyId }) }),
          ),
          extension(OID.crlNumber, false, new asn1js.Integer({ value: input.number })),
        ],
      }),
    });
    // An empty list is left out rather than encoded empty (RFC 5280 §5.1.2.6).
    if (input.entries.length) {
      crl.revokedCertificates = input.entries.map(
        (e) =>
          new pkijs.RevokedCertificate({
            userCertificate: serialInteger(e.serial),
            revocationDate: x509Time(e.revokedAt),
            // RFC 5280 §5.3.1: the reason code `unspecified` SHOULD be absent.
            ...(e.reason && e.reason !== "unspecified"
              ? {
                  crlEntryExtensions: new pkijs.Extensions({
                    extensions: [extension(OID.crlReason, false, new asn1js.Enumerated({ value: REASON_CODE[e.reason] }))],
                  }),
                }
              : {}),
          }),
      );
    }
    await crl.sign(this.#key, this.#hash, engine);
    const der = new Uint8Array(crl.toSchema(true).toBER(false));
    return { der, pem: crlPem(der) };
  }
}

/** How a CA key of this kind signs, in WebCrypto's words; only the kinds a root may have. */
function signingAlgorithm(
  key: PublicKeyDescription | null,
  field = "key",
): { algorithm: EcKeyImportParams | RsaHashedImportParams; hash: string } {
  if (key?.type === "ec" && (key.curve === "P-256" || key.curve === "P-384")) {
    const hash = key.curve === "P-256" ? "SHA-256" : "SHA-384";
    return { algorithm: { name: "ECDSA", namedCurve: key.curve }, hash };
  }
  if (key?.type === "rsa" && key.bits! >= 2048) return { algorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, hash: "SHA-256" };
  throw badRequest("the CA key must be ECDSA P-256, ECDSA P-384 or RSA of at least 2048 bits", field);
}

const PRIVATE_KEY_TYPES: Record<string, "pkcs8" | "sec1" | "pkcs1"> = {
  "PRIVATE KEY": "pkcs8",
  "EC PRIVATE KEY": "sec1",
  "RSA PRIVATE KEY": "pkcs1",
};

function publicJwk(key: KeyObject): JsonWebKey {
  const { kty, crv, x, y, n, e } = (key.type === "private" ? createPublicKey(key) : key).export({ format: "jwk" });
  return { kty, crv, x, y, n, e };
}

/**
 * Checks a root CA offered for import and its private key, and returns them as latchkey stores them
 * (the certificate re-encoded as one PEM block, the key as PKCS#8). Refused, with a sentence that
 * says what is wrong (AppError bad_request, field `certificate` or `key`): not exactly one
 * certificate; not a CA (BasicConstraints CA:TRUE); a KeyUsage extension without keyCertSign or
 * cRLSign (a root without KeyUsage is accepted: RFC 5280 allows any use, and `openssl req -x509`
 * writes none by default); not self-signed; outside its validity at `now`; a key that is not
 * ECDSA P-256/P-384 or RSA ≥ 2048; an encrypted key; a key whose public half is not the
 * certificate's. A notBefore up to CLOCK_SKEW_MS ahead of `now` is tolerated (a root just made on a
 * machine whose clock runs ahead). Key files are accepted as PKCS#8 (`PRIVATE KEY`), SEC1
 * (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
 */
export async function checkCaImport(
  certPem: string,
  keyPem: string,
  now: Date,
): Promise<{ certificatePem: string; keyPem: string; info: CertificateInfo }> {
  const der = certificateDer(certPem);
  const { cert, info } = openCertificate(der);
  if (!info.isCA) throw badRequest("is not a CA certificate (BasicConstraints CA:TRUE is missing)", "certificate");
  if (info.keyUsage && !info.keyUsage.includes("keyCertSign")) {
    throw badRequest("is a CA certificate whose KeyUsage does not allow signing certificates (keyCertSign)", "certificate");
  }
  if (info.keyUsage && !info.keyUsage.includes("cRLSign")) {
    throw badRequest("is a CA certificate whose KeyUsage does not allow signing CRLs (cRLSign), which latchkey publishes", "certificate");
  }
  signingAlgorithm(describeKey(createPublicKey({ key: Buffer.from(info.publicKey), format: "der", type: "spki" })), "certificate");
  if (!info.selfIssued || !(await cert.verify(undefined, engine).catch(() => false))) {
    throw badRequest("is not a self-signed root CA; import the root, not an intermediate", "certificate");
  }
  // A root just made on a machine whose clock runs a little ahead is still taken.
  if (now.getTime() + CLOCK_SKEW_MS < info.notBefore.getTime()) {
    throw badRequest(`is not valid before ${info.notBefore.toISOString()}`, "certificate");
  }
  if (now >= info.notAfter) throw badRequest(`expired on ${info.notAfter.toISOString()}`, "certificate");

  const blocks = pemBlocks(keyPem).filter((b) => b.label.includes("PRIVATE KEY"));
  if (blocks.some((b) => b.label.includes("ENCRYPTED") || b.label.includes("(encrypted)"))) {
    throw badRequest("is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem) and import the plain key", "key");
  }
  const block = blocks.find((b) => b.label in PRIVATE_KEY_TYPES);
  if (!block) throw badRequest("must be a PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", "key");
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: Buffer.from(block.der), format: "der", type: PRIVATE_KEY_TYPES[block.label]! });
  } catch {
    throw badRequest(`is not a valid ${block.label}`, "key");
  }
  signingAlgorithm(describeKey(key));
  const certKey = createPublicKey({ key: Buffer.from(info.publicKey), format: "der", type: "spki" });
  if (JSON.stringify(publicJwk(key)) !== JSON.stringify(publicJwk(certKey))) {
    throw badRequest("does not belong to the certificate (its public key is not the certificate's)", "key");
  }
  const pkcs8 = new Uint8Array(key.export({ type: "pkcs8", format: "der" }));
  return { certificatePem: certificatePem(der), keyPem: toPem("PRIVATE KEY", pkcs8), info };
}

// Certificate requests

/** Signature algorithms a CSR may be signed with, and the digest node:crypto verifies each with (null: Ed25519 signs the data itself). */
const CSR_SIGNATURES: Record<string, string | null> = {
  "1.2.840.10045.4.3.2": "sha256", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
  "1.3.101.112": null, // Ed25519
};

export interface CertificateRequestInfo {
  /** The requested key (SubjectPublicKeyInfo DER): what the certificate will certify. */
  spki: Uint8Array;
  /** The subject's CN, if it names one. */
  commonName: string | null;
}

/**
 * Reads a PKCS#10 certificate request (one `CERTIFICATE REQUEST` PEM block) and checks that it is
 * signed by the key it carries: proof that the requester holds the private key. Only the key and
 * the CN are taken from it; whatever else it asks for (extensions, other names) the CA decides.
 * bad_request (about `field`) when it is not readable, its key is not one latchkey certifies, or
 * its signature does not verify.
 */
export function readCertificateRequest(pem: string, field = "csr"): CertificateRequestInfo {
  const blocks = pemBlocks(pem).filter((b) => b.label === "CERTIFICATE REQUEST" || b.label === "NEW CERTIFICATE REQUEST");
  if (blocks.length !== 1) throw badRequest("must be one PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)", field);
  let request: pkijs.CertificationRequest;
  try {
    request = pkijs.CertificationRequest.fromBER(new Uint8Array(blocks[0]!.der));
  } catch {
    throw badRequest("is not a valid PKCS#10 certificate request", field);
  }
  const spki = spkiDer(request.subjectPublicKeyInfo);
  describePublicKey(spki, field);
  const algorithm = request.signatureAlgorithm.algorithmId;
  if (!(algorithm in CSR_SIGNATURES)) {
    throw badRequest("must be signed with ECDSA or RSA PKCS#1 v1.5 over SHA-256/384/512, or with Ed25519", field);
  }
  let valid = false;
  try {
    const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
    valid = verifySignature(CSR_SIGNATURES[algorithm] ?? null, request.tbsView, key, request.signatureValue.valueBlock.valueHexView);
  } catch {
    valid = false;
  }
  if (!valid) throw badRequest("is not signed by the key it carries: its signature does not verify", field);
  return { spki, commonName: attribute(request.subject, OID.commonName) };
}
