/**
 * X.509 path validation for client (and server) certificates: PKIjs parses the certificates,
 * verifies their signatures and runs its chain engine over the chosen path; this module builds the
 * path and adds what that engine does not check by itself (SPEC §9): basicConstraints on every
 * issuer, pathLenConstraint, keyUsage, extended key usage, name constraints, the peer's name,
 * unknown critical extensions and the RFC 5280 profile rules a verifier can enforce.
 *
 * The work is split in two so that it can be cached (SPEC §5: verify once per certificate):
 * `analyse` is everything that does not depend on the clock (parsing, path building, signatures,
 * constraints) and ends with the structurally valid paths and the window of time in which each is
 * valid; `verify` then only picks a path whose window holds the validation time. Revocation is not
 * here: the caller checks the serial or fingerprint against the database on every connection.
 *
 * Decisions, each after RFC 5280 unless said otherwise (docs/x509-limbo.md lists where this
 * differs from the x509-limbo corpus):
 * - A leaf without an extKeyUsage extension is accepted for any usage (RFC 5280 4.2.1.12, as
 *   OpenSSL/BoringSSL do, so that this check never refuses what the TLS layer accepted); a leaf
 *   with the extension must list the usage itself: anyExtendedKeyUsage alone does not do (CA/B
 *   BR 7.1.2.7.10, and OpenSSL's purpose check). An issuer that carries extKeyUsage must list the
 *   usage or anyExtendedKeyUsage.
 * - A leaf with basicConstraints cA=TRUE is refused unless the policy allows it (`allowCaLeaf`):
 *   latchkey's own leaves are CA:FALSE (SPEC §9).
 * - The trust anchors are checked like every other certificate of the path (cA, key usage,
 *   validity, name constraints), not only used for their keys.
 * - Every signature that is verified must be RSA PKCS#1 v1.5 or RSA-PSS with SHA-256/384/512, or
 *   ECDSA with SHA-256/384/512; a trust anchor's own (self-)signature is not verified, so old
 *   SHA-1-signed roots still work as anchors.
 * - subjectKeyIdentifier and authorityKeyIdentifier are used to skip hopeless candidates, never
 *   required: names and signatures decide the path.
 */
import { createHash } from "node:crypto";
import * as pkijs from "pkijs";

export type CertificateInput = Uint8Array | string;
export type ExtendedKeyUsage = "serverAuth" | "clientAuth";
export type KeyUsageName =
  | "digitalSignature"
  | "contentCommitment"
  | "keyEncipherment"
  | "dataEncipherment"
  | "keyAgreement"
  | "keyCertSign"
  | "cRLSign"
  | "encipherOnly"
  | "decipherOnly";
export type PeerName = { kind: "dns" | "ip"; value: string };

export type RejectReason =
  /** Not a DER X.509 v3 certificate PKIjs can read, an empty issuer or CA subject, or differing signature algorithm fields. */
  | "malformed"
  /** An extension that is duplicated, unreadable, empty, marked critical where it must not be, or used where it may not be. */
  | "invalid_extension"
  /** A critical extension this verifier does not process. */
  | "critical_extension"
  /** A signature algorithm outside the allowed list (SHA-1, MD5, DSA, Ed25519 …). */
  | "unsupported_algorithm"
  /** A public key that is not RSA, EC on P-256/P-384/P-521 or Ed25519. */
  | "unsupported_key"
  | "unknown_issuer"
  | "bad_signature"
  | "not_a_ca"
  | "key_usage"
  | "path_length"
  | "chain_too_long"
  | "eku"
  | "name_constraints"
  | "leaf_is_ca"
  | "name_mismatch"
  | "expired"
  | "not_yet_valid"
  /** PKIjs' chain engine refused a path that the checks of this module accepted. */
  | "chain_invalid";

export interface LeafSummary {
  /** The first commonName of the subject, if any. */
  cn: string | null;
  sans: { dns: string[]; ip: string[]; email: string[]; uri: string[] };
  /** Lowercase hex of the serial number's value, without leading zero bytes. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Lowercase hex SHA-256 of the DER. */
  fingerprint: string;
}

/** On success, `chain` is the path as DER, leaf first, trust anchor last. */
export type VerifyResult = { ok: true; chain: Uint8Array[]; leaf: LeafSummary } | { ok: false; reason: RejectReason };

export interface VerifierPolicy {
  roots: readonly CertificateInput[];
  /** Untrusted certificates that may be used to build a path. */
  intermediates?: readonly CertificateInput[];
  /** The usage the leaf must allow; null checks none. */
  extendedKeyUsage: ExtendedKeyUsage | null;
  /** Key usages the leaf must allow when it has a keyUsage extension. */
  keyUsage?: readonly KeyUsageName[];
  /** Accept a leaf with basicConstraints cA=TRUE (default false). */
  allowCaLeaf?: boolean;
  /** The most intermediates a path may have, not counting self-issued ones (default 8). */
  maxChainDepth?: number;
  /** How many certificates' analyses are kept, least recently used dropped first (default 10,000; 0 keeps none). */
  cacheSize?: number;
}

export const DEFAULT_MAX_CHAIN_DEPTH = 8;
export const DEFAULT_CACHE_SIZE = 10_000;

// Bounds on the search for a path, so that a crafted set of intermediates cannot make it explode.
const MAX_PATH_CERTIFICATES = 16;
const MAX_CANDIDATE_PATHS = 8;
const MAX_SIGNATURE_CHECKS = 64;
// Larger than any certificate latchkey issues or a public CA serves (google.com's leaf, with ~100
// names, is 3.6 KiB). Any peer can make PKIjs parse what it sends, before a signature is checked:
// at this size that costs 10-15 ms.
const MAX_CERTIFICATE_BYTES = 16 * 1024;

/** Outcomes reached before any trust anchor vouched for the certificate: not cached, see `analysis`. */
const UNAUTHENTICATED = new Set<RejectReason>(["malformed", "unknown_issuer", "bad_signature", "unsupported_algorithm"]);

// PKIjs is given its WebCrypto engine explicitly on every call, rather than through the global
// `setEngine`, so that this module neither depends on nor changes what the rest of the process set.
const cryptoEngine = new pkijs.CryptoEngine({ name: "webcrypto", crypto: globalThis.crypto });

const OID = {
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  nameConstraints: "2.5.29.30",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  certificatePolicies: "2.5.29.32",
  policyMappings: "2.5.29.33",
  policyConstraints: "2.5.29.36",
  inhibitAnyPolicy: "2.5.29.54",
  authorityInfoAccess: "1.3.6.1.5.5.7.1.1",
  anyExtendedKeyUsage: "2.5.29.37.0",
  commonName: "2.5.4.3",
  emailAddress: "1.2.840.113549.1.9.1",
} as const;

const EKU_OID: Record<ExtendedKeyUsage, string> = { serverAuth: "1.3.6.1.5.5.7.3.1", clientAuth: "1.3.6.1.5.5.7.3.2" };

const KEY_USAGE_BIT: Record<KeyUsageName, number> = {
  digitalSignature: 0,
  contentCommitment: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
  encipherOnly: 7,
  decipherOnly: 8,
};

/** Critical extensions that are processed, here or by PKIjs' chain engine (the policy ones). */
const PROCESSED_EXTENSIONS = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  OID.certificatePolicies,
  OID.policyMappings,
  OID.policyConstraints,
  OID.inhibitAnyPolicy,
]);

const ALLOWED_SIGNATURE_ALGORITHMS = new Set([
  "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
  "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
  "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
  "1.2.840.113549.1.1.10", // RSASSA-PSS
  "1.2.840.10045.4.3.2", // ecdsa-with-SHA256
  "1.2.840.10045.4.3.3", // ecdsa-with-SHA384
  "1.2.840.10045.4.3.4", // ecdsa-with-SHA512
]);

const RSA_KEYS = new Set(["1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10"]);
const EC_KEY = "1.2.840.10045.2.1";
const ED25519_KEY = "1.3.101.112";
const ALLOWED_CURVES = new Set(["1.2.840.10045.3.1.7", "1.3.132.0.34", "1.3.132.0.35"]);

// GeneralName tags (RFC 5280 4.2.1.6).
const GN = { rfc822Name: 1, dNSName: 2, directoryName: 4, uri: 6, iPAddress: 7 };

/** What the extensions of one certificate say, read once. */
interface Facts {
  ca: boolean;
  /** pathLenConstraint; undefined when absent. */
  pathLength: number | undefined;
  /** keyUsage as a bit mask (bit i = RFC 5280 bit i); undefined when the extension is absent. */
  keyUsage: number | undefined;
  extKeyUsage: string[] | undefined;
  altNames: pkijs.GeneralName[] | undefined;
  nameConstraints: { permitted: pkijs.GeneralSubtree[]; excluded: pkijs.GeneralSubtree[] } | undefined;
  subjectKeyId: Uint8Array | undefined;
  selfIssued: boolean;
}

type Inspection = { ok: true; facts: Facts } | { ok: false; reason: RejectReason };

interface Parsed {
  der: Uint8Array;
  cert: pkijs.Certificate;
  fingerprint: string;
  /** The profile check of this certificate on its own, made on first use (see `inspected`). */
  inspection?: Inspection;
}

interface ValidPath {
  chain: Parsed[];
  notBefore: number;
  notAfter: number;
}

/** The clock-independent outcome for one peer certificate: what the cache holds. */
type Analysis =
  { ok: false; reason: RejectReason } | { ok: true; leaf: LeafSummary; dnsNames: string[]; ipAddresses: Uint8Array[]; paths: ValidPath[] };

class Rejection {
  constructor(readonly reason: RejectReason) {}
}

/**
 * Verifies peer certificates against fixed trust anchors and a fixed policy. The clock-independent
 * part of each verification is cached by the SHA-256 of the peer's DER, so a certificate seen
 * again costs a map lookup and a comparison of times.
 */
export class CertificateVerifier {
  /** Counts for tests and metrics: `analyses` is chain work done, `cacheHits` is chain work saved. */
  readonly counters = { analyses: 0, cacheHits: 0 };
  private readonly anchors: Parsed[];
  private readonly intermediates: Parsed[];
  private readonly policy: Required<Omit<VerifierPolicy, "roots" | "intermediates">>;
  private readonly cache = new Map<string, Promise<Analysis>>();

  constructor(policy: VerifierPolicy) {
    this.anchors = policy.roots.flatMap(certificateDers).map((der, i) => parseTrusted(der, `trust anchor ${i + 1}`));
    if (this.anchors.length === 0) throw new Error("a certificate verifier needs at least one trust anchor");
    const anchorPrints = new Set(this.anchors.map((a) => a.fingerprint));
    this.intermediates = (policy.intermediates ?? [])
      .flatMap(certificateDers)
      .map((der, i) => parseTrusted(der, `intermediate ${i + 1}`))
      .filter((c) => !anchorPrints.has(c.fingerprint));
    this.policy = {
      extendedKeyUsage: policy.extendedKeyUsage,
      keyUsage: policy.keyUsage ?? [],
      allowCaLeaf: policy.allowCaLeaf ?? false,
      maxChainDepth: policy.maxChainDepth ?? DEFAULT_MAX_CHAIN_DEPTH,
      cacheSize: policy.cacheSize ?? DEFAULT_CACHE_SIZE,
    };
  }

  /** Verifies `der` at `time`; with `expectedName`, the leaf's subjectAltName must match it. */
  async verify(der: Uint8Array, { time, expectedName }: { time: Date | number; expectedName?: PeerName }): Promise<VerifyResult> {
    const analysis = await this.analysis(der);
    if (!analysis.ok) return analysis;
    if (expectedName && !matchesPeerName(analysis, expectedName)) return { ok: false, reason: "name_mismatch" };
    const at = typeof time === "number" ? time : time.getTime();
    const path = analysis.paths.find((p) => p.notBefore <= at && at <= p.notAfter);
    // Copies: what the cache holds must not change with what a caller does to a result.
    if (path) return { ok: true, chain: path.chain.map((c) => c.der.slice()), leaf: copyOf(analysis.leaf) };
    return { ok: false, reason: timeReason(analysis, at) };
  }

  private analysis(der: Uint8Array): Promise<Analysis> {
    const key = sha256Hex(der);
    const cached = this.cache.get(key);
    if (cached) {
      this.counters.cacheHits++;
      this.cache.delete(key);
      this.cache.set(key, cached);
      return cached;
    }
    const fresh = this.analyse(der, key);
    if (this.policy.cacheSize > 0) {
      this.cache.set(key, fresh);
      if (this.cache.size > this.policy.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      // Anyone can present certificates no anchor vouches for, as many as they like: keeping those
      // would let them push out the entries of genuine clients. Refusing them again is cheap.
      void fresh.then((analysis) => {
        if (!analysis.ok && UNAUTHENTICATED.has(analysis.reason) && this.cache.get(key) === fresh) this.cache.delete(key);
      });
    }
    return fresh;
  }

  private async analyse(der: Uint8Array, fingerprint: string): Promise<Analysis> {
    this.counters.analyses++;
    try {
      const leaf = parse(der, fingerprint);
      if (!leaf) return { ok: false, reason: "malformed" };
      // Signatures first: the extensions of a certificate no anchor vouches for are never read
      // (PKIjs takes tens of milliseconds over a large subjectAltName).
      const paths = await this.candidatePaths(leaf);
      const inspection = inspected(leaf);
      if (!inspection.ok) return inspection;
      const valid: ValidPath[] = [];
      let firstFailure: RejectReason | undefined;
      for (const chain of paths) {
        const failure = this.checkPath(chain) ?? (await checkWithPkijs(chain));
        if (failure) firstFailure ??= failure;
        else valid.push(validityWindow(chain));
      }
      if (valid.length === 0) return { ok: false, reason: firstFailure ?? "unknown_issuer" };
      const names = peerNames(leaf);
      return { ok: true, leaf: summarise(leaf), dnsNames: names.dns, ipAddresses: names.ip, paths: valid };
    } catch (error) {
      if (error instanceof Rejection) return { ok: false, reason: error.reason };
      // PKIjs throws on input it cannot read (deep inside an extension, a key, a signature value).
      return { ok: false, reason: "malformed" };
    }
  }

  /**
   * Every path from the leaf to a trust anchor through the intermediates, depth first, anchors
   * tried before intermediates, no certificate twice in a path (so cycles end), shortest first.
   * Each link is a name match and a signature PKIjs verified. Throws a Rejection when none exists.
   */
  private async candidatePaths(leaf: Parsed): Promise<Parsed[][]> {
    if (this.anchors.some((a) => a.fingerprint === leaf.fingerprint)) return [[leaf]];
    const found: Parsed[][] = [];
    const search = { signatureChecks: 0, badSignature: false, unsupportedAlgorithm: false };
    const issues = async (issuer: Parsed, child: Parsed): Promise<boolean> => {
      if (!child.cert.issuer.isEqual(issuer.cert.subject)) return false;
      const authorityKeyId = authorityKeyIdentifier(child.cert);
      const issuerInspection = inspected(issuer);
      const subjectKeyId = issuerInspection.ok ? issuerInspection.facts.subjectKeyId : undefined;
      if (authorityKeyId && subjectKeyId && !sameBytes(authorityKeyId, subjectKeyId)) return false;
      if (!ALLOWED_SIGNATURE_ALGORITHMS.has(child.cert.signatureAlgorithm.algorithmId)) {
        search.unsupportedAlgorithm = true;
        return false;
      }
      if (search.signatureChecks++ >= MAX_SIGNATURE_CHECKS) return false;
      const good = await child.cert.verify(issuer.cert, cryptoEngine).catch(() => false);
      if (!good) search.badSignature = true;
      return good;
    };
    const extend = async (path: Parsed[]): Promise<void> => {
      const child = path[path.length - 1]!;
      for (const anchor of this.anchors) {
        if (found.length < MAX_CANDIDATE_PATHS && (await issues(anchor, child))) found.push([...path, anchor]);
      }
      if (path.length + 1 >= MAX_PATH_CERTIFICATES) return;
      for (const intermediate of this.intermediates) {
        if (found.length >= MAX_CANDIDATE_PATHS) return;
        const repeated = path.some((c) => c.fingerprint === intermediate.fingerprint);
        if (!repeated && (await issues(intermediate, child))) await extend([...path, intermediate]);
      }
    };
    await extend([leaf]);
    if (found.length === 0) {
      throw new Rejection(search.unsupportedAlgorithm ? "unsupported_algorithm" : search.badSignature ? "bad_signature" : "unknown_issuer");
    }
    return found.sort((a, b) => a.length - b.length);
  }

  /** The checks PKIjs' engine lacks, over one path (leaf first, anchor last); undefined when it passes. */
  private checkPath(chain: Parsed[]): RejectReason | undefined {
    const facts: Facts[] = [];
    for (const c of chain) {
      const inspection = inspected(c);
      if (!inspection.ok) return inspection.reason;
      facts.push(inspection.facts);
    }
    const leaf = facts[0]!;
    const issuers = facts.slice(1);
    for (const [i, f] of issuers.entries()) {
      if (!f.ca) return "not_a_ca";
      if (!basicConstraintsCritical(chain[i + 1]!.cert)) return "invalid_extension";
      if (chain[i + 1]!.cert.subject.typesAndValues.length === 0) return "malformed";
      if (f.keyUsage !== undefined && !hasBit(f.keyUsage, KEY_USAGE_BIT.keyCertSign)) return "key_usage";
    }
    if (leaf.ca && !this.policy.allowCaLeaf) return "leaf_is_ca";
    // RFC 5280 4.2.1.3 / 4.2.1.9: keyCertSign and cA go together when keyUsage is present.
    if (leaf.keyUsage !== undefined && hasBit(leaf.keyUsage, KEY_USAGE_BIT.keyCertSign) !== leaf.ca) return "key_usage";

    // RFC 5280 6.1.4 (l)-(m), with the anchor's own constraint applied too; self-issued
    // intermediates do not count, and the leaf is not an intermediate.
    let remaining = Infinity;
    let depth = 0;
    for (let i = chain.length - 1; i >= 1; i--) {
      const f = facts[i]!;
      if (i < chain.length - 1 && !f.selfIssued) {
        if (remaining <= 0) return "path_length";
        remaining--;
        depth++;
      }
      if (f.pathLength !== undefined) remaining = Math.min(remaining, f.pathLength);
    }
    if (depth > this.policy.maxChainDepth) return "chain_too_long";

    const usage = this.policy.extendedKeyUsage;
    if (usage) {
      if (leaf.extKeyUsage && !leaf.extKeyUsage.includes(EKU_OID[usage])) return "eku";
      for (const f of issuers) {
        if (f.extKeyUsage && !f.extKeyUsage.includes(EKU_OID[usage]) && !f.extKeyUsage.includes(OID.anyExtendedKeyUsage)) return "eku";
      }
    }
    if (leaf.keyUsage !== undefined && this.policy.keyUsage.some((u) => !hasBit(leaf.keyUsage!, KEY_USAGE_BIT[u]))) return "key_usage";

    for (let k = 1; k < chain.length; k++) {
      const constraints = facts[k]!.nameConstraints;
      if (!constraints) continue;
      for (let j = 0; j < k; j++) {
        // RFC 5280 6.1.3 (b): self-issued intermediates are exempt, a self-issued leaf is not.
        if (j > 0 && facts[j]!.selfIssued) continue;
        if (!withinConstraints(constrainedNames(chain[j]!), constraints)) return "name_constraints";
      }
    }
    return undefined;
  }
}

/**
 * One-shot verification, nothing cached: `policy` with the time and optional expected name.
 */
export async function verifyCertificate(
  der: Uint8Array,
  policy: VerifierPolicy & { time: Date | number; expectedName?: PeerName },
): Promise<VerifyResult> {
  return new CertificateVerifier({ ...policy, cacheSize: 0 }).verify(der, policy);
}

const clientVerifiers = new Map<string, CertificateVerifier>();
const MAX_CLIENT_VERIFIERS = 8;

/**
 * The shared verifier of client certificates for a set of roots: clientAuth, digitalSignature when
 * keyUsage is present, a CA:FALSE leaf, cached analyses. One per distinct set of roots.
 */
export function clientCertificateVerifier(roots: readonly CertificateInput[]): CertificateVerifier {
  const ders = roots.flatMap(certificateDers);
  const key = ders.map(sha256Hex).sort().join(",");
  let verifier = clientVerifiers.get(key);
  if (!verifier) {
    verifier = new CertificateVerifier({ roots: ders, extendedKeyUsage: "clientAuth", keyUsage: ["digitalSignature"] });
    clientVerifiers.set(key, verifier);
    if (clientVerifiers.size > MAX_CLIENT_VERIFIERS) clientVerifiers.delete(clientVerifiers.keys().next().value!);
  }
  return verifier;
}

/**
 * Verifies a TLS client's certificate (the DER from the handshake) against `roots` at `now`. The
 * chain work is done once per certificate; validity times are checked on every call. Revocation is
 * the caller's: look up `leaf.serial` or `leaf.fingerprint`.
 */
export async function verifyClientCertificate(
  der: Uint8Array,
  { roots, now }: { roots: readonly CertificateInput[]; now: Date | number },
): Promise<VerifyResult> {
  return clientCertificateVerifier(roots).verify(der, { time: now });
}

/** The DER certificates in a PEM text (every CERTIFICATE block), or the DER itself. */
export function certificateDers(input: CertificateInput): Uint8Array[] {
  if (typeof input !== "string") return [input];
  const blocks = [...input.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g)];
  return blocks.map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64")));
}

// ---------------------------------------------------------------------------------------------
// Parsing and the per-certificate profile

function sha256Hex(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

function parseTrusted(der: Uint8Array, what: string): Parsed {
  const parsed = parse(der, sha256Hex(der));
  if (!parsed) throw new Error(`${what} is not a readable X.509 certificate`);
  return parsed;
}

/** The certificate, or null when `der` is not exactly one DER SEQUENCE that PKIjs reads as a certificate. */
function parse(input: Uint8Array, fingerprint: string): Parsed | null {
  if (input.byteLength > MAX_CERTIFICATE_BYTES || encodedLength(input) !== input.byteLength) return null;
  // A copy, so that a caller reusing its buffer cannot change what the cache holds.
  const der = new Uint8Array(input);
  let cert: pkijs.Certificate;
  try {
    cert = pkijs.Certificate.fromBER(der);
  } catch {
    return null;
  }
  return { der, cert, fingerprint };
}

/** The length of the outer SEQUENCE's encoding as its header says, or -1. */
function encodedLength(der: Uint8Array): number {
  if (der.byteLength < 2 || der[0] !== 0x30) return -1;
  const first = der[1]!;
  if (first < 0x80) return 2 + first;
  const octets = first & 0x7f;
  if (octets === 0 || octets > 4 || der.byteLength < 2 + octets) return -1;
  let length = 0;
  for (let i = 0; i < octets; i++) length = length * 256 + der[2 + i]!;
  return 2 + octets + length;
}

/** `inspect`, once per certificate, on first use (a leaf's only after a signature chains it to an anchor). */
function inspected(parsed: Parsed): Inspection {
  if (!parsed.inspection) {
    try {
      parsed.inspection = inspect(parsed.cert);
    } catch {
      parsed.inspection = { ok: false, reason: "malformed" };
    }
  }
  return parsed.inspection;
}

/** The keyIdentifier of the authorityKeyIdentifier extension, read alone (without `inspect`). */
function authorityKeyIdentifier(cert: pkijs.Certificate): Uint8Array | undefined {
  const value: unknown = cert.extensions?.find((e) => e.extnID === OID.authorityKeyIdentifier)?.parsedValue;
  return value instanceof pkijs.AuthorityKeyIdentifier && value.keyIdentifier ? octets(value.keyIdentifier) : undefined;
}

/** A certificate's own profile (RFC 5280 4.1-4.2), independent of its place in a path. */
function inspect(cert: pkijs.Certificate): Inspection {
  const refuse = (reason: RejectReason) => ({ ok: false as const, reason });
  if (cert.version !== 2) return refuse("malformed");
  if (cert.issuer.typesAndValues.length === 0) return refuse("malformed");
  if (!cert.signature.isEqual(cert.signatureAlgorithm)) return refuse("malformed");
  if (!allowedKey(cert.subjectPublicKeyInfo)) return refuse("unsupported_key");

  const facts: Facts = {
    ca: false,
    pathLength: undefined,
    keyUsage: undefined,
    extKeyUsage: undefined,
    altNames: undefined,
    nameConstraints: undefined,
    subjectKeyId: undefined,
    selfIssued: cert.subject.isEqual(cert.issuer),
  };
  let altNamesCritical = false;
  const seen = new Set<string>();
  for (const extension of cert.extensions ?? []) {
    const id = extension.extnID;
    if (seen.has(id)) return refuse("invalid_extension");
    seen.add(id);
    const value: unknown = extension.parsedValue;
    const unreadable = value === undefined || (typeof value === "object" && value !== null && "parsingError" in value);
    if (unreadable && (PROCESSED_EXTENSIONS.has(id) || id === OID.authorityInfoAccess)) return refuse("invalid_extension");
    switch (id) {
      case OID.basicConstraints: {
        if (!(value instanceof pkijs.BasicConstraints)) return refuse("invalid_extension");
        facts.ca = value.cA === true;
        if (value.pathLenConstraint !== undefined) {
          const length = typeof value.pathLenConstraint === "number" ? value.pathLenConstraint : Infinity;
          if (!facts.ca || length < 0) return refuse("invalid_extension");
          facts.pathLength = length;
        }
        break;
      }
      case OID.keyUsage: {
        const bits = bitString(value);
        if (bits === undefined || bits === 0) return refuse("invalid_extension");
        facts.keyUsage = bits;
        break;
      }
      case OID.extKeyUsage:
        if (!(value instanceof pkijs.ExtKeyUsage) || value.keyPurposes.length === 0) return refuse("invalid_extension");
        facts.extKeyUsage = value.keyPurposes;
        break;
      case OID.subjectAltName:
        if (!(value instanceof pkijs.AltName) || value.altNames.length === 0) return refuse("invalid_extension");
        facts.altNames = value.altNames;
        altNamesCritical = extension.critical;
        break;
      case OID.nameConstraints: {
        if (!(value instanceof pkijs.NameConstraints)) return refuse("invalid_extension");
        const permitted = value.permittedSubtrees ?? [];
        const excluded = value.excludedSubtrees ?? [];
        if (permitted.length === 0 && excluded.length === 0) return refuse("invalid_extension");
        if (![...permitted, ...excluded].every(wellFormedSubtree)) return refuse("invalid_extension");
        facts.nameConstraints = { permitted, excluded };
        break;
      }
      case OID.subjectKeyIdentifier:
      case OID.authorityKeyIdentifier: {
        if (extension.critical) return refuse("invalid_extension");
        if (id === OID.subjectKeyIdentifier) facts.subjectKeyId = octets(value);
        break;
      }
      case OID.authorityInfoAccess:
        if (!(value instanceof pkijs.InfoAccess) || value.accessDescriptions.length === 0) return refuse("invalid_extension");
        if (extension.critical) return refuse("critical_extension");
        break;
      default:
        if (extension.critical && !PROCESSED_EXTENSIONS.has(id)) return refuse("critical_extension");
    }
  }
  // RFC 5280 4.2.1.6: an empty subject needs a critical subjectAltName.
  if (cert.subject.typesAndValues.length === 0 && (!facts.altNames || !altNamesCritical)) return refuse("invalid_extension");
  // RFC 5280 4.2.1.10: name constraints only in CA certificates.
  if (facts.nameConstraints && !facts.ca) return refuse("invalid_extension");
  return { ok: true, facts };
}

function basicConstraintsCritical(cert: pkijs.Certificate): boolean {
  return cert.extensions?.some((e) => e.extnID === OID.basicConstraints && e.critical) ?? false;
}

function allowedKey(spki: pkijs.PublicKeyInfo): boolean {
  const algorithm = spki.algorithm.algorithmId;
  if (RSA_KEYS.has(algorithm) || algorithm === ED25519_KEY) return true;
  if (algorithm !== EC_KEY) return false;
  const curve = objectIdentifier(spki.algorithm.algorithmParams);
  return curve !== undefined && ALLOWED_CURVES.has(curve);
}

/** asn1js values (inside PKIjs objects) are read by shape: package.json declares PKIjs, not asn1js. */
type Asn1Value = { idBlock?: { tagClass?: number; tagNumber?: number }; valueBlock?: Record<string, unknown> };

function isUniversal(value: unknown, tag: number): value is Required<Asn1Value> {
  const v = value as Asn1Value | undefined;
  return v?.idBlock?.tagClass === 1 && v.idBlock.tagNumber === tag && typeof v.valueBlock === "object";
}

function objectIdentifier(value: unknown): string | undefined {
  if (!isUniversal(value, 6)) return undefined;
  const block = value.valueBlock as { toString(): string };
  return block.toString();
}

function octets(value: unknown): Uint8Array | undefined {
  if (!isUniversal(value, 4)) return undefined;
  return value.valueBlock.valueHexView as Uint8Array;
}

/** A BIT STRING as a mask with RFC 5280 bit i at (1 << i); undefined when not a BIT STRING. */
function bitString(value: unknown): number | undefined {
  if (!isUniversal(value, 3)) return undefined;
  const bytes = value.valueBlock.valueHexView as Uint8Array;
  let mask = 0;
  for (let i = 0; i < Math.min(bytes.length * 8, 16); i++) if (bytes[i >> 3]! & (0x80 >> (i & 7))) mask |= 1 << i;
  return mask;
}

function hasBit(mask: number, bit: number): boolean {
  return (mask & (1 << bit)) !== 0;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---------------------------------------------------------------------------------------------
// PKIjs' chain engine, run over exactly the path chosen here

async function checkWithPkijs(chain: Parsed[]): Promise<RejectReason | undefined> {
  if (chain.length < 2) return undefined; // the leaf is itself a trust anchor: nothing to chain
  const window = validityWindow(chain);
  // A path never valid at any time is kept for `verify` to call expired; the engine has no date to run at.
  if (window.notBefore > window.notAfter) return undefined;
  const certs = chain.map((c) => c.cert);
  const engine = new pkijs.CertificateChainValidationEngine({
    trustedCerts: [certs[certs.length - 1]!],
    // PKIjs takes the last certificate as the leaf.
    certs: certs.slice(0, -1).reverse(),
    checkDate: new Date(window.notBefore),
    // The links were found and their signatures verified by candidatePaths: hand the engine that path.
    findIssuer: async (cert) => {
      const i = certs.indexOf(cert);
      return i >= 0 && i + 1 < certs.length ? [certs[i + 1]!] : [];
    },
  });
  const result = await engine.verify({}, cryptoEngine);
  if (result.result) return undefined;
  if (result.resultCode === 41 || result.resultCode === 42) return "name_constraints";
  if (result.resultCode === 14) return "not_a_ca";
  return "chain_invalid";
}

function validityWindow(chain: Parsed[]): ValidPath {
  return {
    chain,
    notBefore: Math.max(...chain.map((c) => c.cert.notBefore.value.getTime())),
    notAfter: Math.min(...chain.map((c) => c.cert.notAfter.value.getTime())),
  };
}

function timeReason(analysis: Extract<Analysis, { ok: true }>, at: number): RejectReason {
  const { notBefore, notAfter } = analysis.leaf;
  if (at < notBefore.getTime()) return "not_yet_valid";
  if (at > notAfter.getTime()) return "expired";
  const first = analysis.paths[0]!;
  return at < first.notBefore && first.notBefore <= first.notAfter ? "not_yet_valid" : "expired";
}

// ---------------------------------------------------------------------------------------------
// Names: the leaf summary, the expected peer name, name constraints

function summarise(leaf: Parsed): LeafSummary {
  const inspection = inspected(leaf);
  const facts = inspection.ok ? inspection.facts : undefined;
  const sans: LeafSummary["sans"] = { dns: [], ip: [], email: [], uri: [] };
  for (const name of facts?.altNames ?? []) {
    if (name.type === GN.dNSName) sans.dns.push(String(name.value));
    else if (name.type === GN.iPAddress) sans.ip.push(formatIp(octets(name.value) ?? new Uint8Array()));
    else if (name.type === GN.rfc822Name) sans.email.push(String(name.value));
    else if (name.type === GN.uri) sans.uri.push(String(name.value));
  }
  const serial = Buffer.from(leaf.cert.serialNumber.valueBlock.valueHexView)
    .toString("hex")
    .replace(/^(00)+(?=.)/, "");
  return {
    cn: attributes(leaf.cert.subject, OID.commonName)[0] ?? null,
    sans,
    serial,
    notBefore: leaf.cert.notBefore.value,
    notAfter: leaf.cert.notAfter.value,
    fingerprint: leaf.fingerprint,
  };
}

function copyOf(leaf: LeafSummary): LeafSummary {
  const { dns, ip, email, uri } = leaf.sans;
  return {
    ...leaf,
    sans: { dns: [...dns], ip: [...ip], email: [...email], uri: [...uri] },
    notBefore: new Date(leaf.notBefore),
    notAfter: new Date(leaf.notAfter),
  };
}

function attributes(name: pkijs.RelativeDistinguishedNames, type: string): string[] {
  return name.typesAndValues
    .filter((tv) => tv.type === type)
    .map((tv) => String((tv.value as unknown as Asn1Value).valueBlock?.value ?? ""));
}

/** The leaf's subjectAltName dNSNames (lowercase) and iPAddresses, for matching an expected name. */
function peerNames(leaf: Parsed): { dns: string[]; ip: Uint8Array[] } {
  const inspection = inspected(leaf);
  const altNames = inspection.ok ? (inspection.facts.altNames ?? []) : [];
  return {
    dns: altNames.filter((n) => n.type === GN.dNSName).map((n) => String(n.value).toLowerCase()),
    ip: altNames.filter((n) => n.type === GN.iPAddress).flatMap((n) => octets(n.value) ?? []),
  };
}

/** RFC 6125 6.4 against subjectAltName only (never the CN); a wildcard only as the whole leftmost label. */
function matchesPeerName(analysis: Extract<Analysis, { ok: true }>, expected: PeerName): boolean {
  if (expected.kind === "ip") {
    const address = parseIp(expected.value);
    return address !== undefined && analysis.ipAddresses.some((a) => sameBytes(a, address));
  }
  const host = expected.value.toLowerCase().replace(/\.$/, "");
  if (!isHostname(host)) return false;
  return analysis.dnsNames.some((pattern) => {
    if (!isPresentedDnsName(pattern)) return false;
    if (!pattern.startsWith("*.")) return pattern === host;
    const dot = host.indexOf(".");
    return dot > 0 && host.slice(dot + 1) === pattern.slice(2);
  });
}

const LABEL = "[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?";
const HOSTNAME = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
/** A wildcard needs at least two labels after it ("*.com" is refused). */
const WILDCARD = new RegExp(`^\\*\\.${LABEL}(?:\\.${LABEL})+$`);

function isHostname(name: string): boolean {
  return name.length <= 253 && HOSTNAME.test(name);
}

function isPresentedDnsName(name: string): boolean {
  return isHostname(name) || (name.length <= 253 && WILDCARD.test(name));
}

/** A dNSName constraint: a hostname, optionally with a leading "." (subdomains only), or "" (everything). */
function isDnsConstraint(constraint: string): boolean {
  const name = constraint.toLowerCase();
  return name === "" || isHostname(name.startsWith(".") ? name.slice(1) : name);
}

function wellFormedSubtree(subtree: pkijs.GeneralSubtree): boolean {
  // RFC 5280 4.2.1.10: minimum MUST be zero and maximum MUST be absent.
  if (subtree.minimum !== 0 || subtree.maximum !== undefined) return false;
  const base = subtree.base;
  if (base.type === GN.dNSName) return isDnsConstraint(String(base.value));
  if (base.type === GN.iPAddress) {
    const bytes = octets(base.value);
    return bytes !== undefined && (bytes.length === 8 || bytes.length === 32) && contiguousMask(bytes.subarray(bytes.length / 2));
  }
  return true;
}

function contiguousMask(mask: Uint8Array): boolean {
  let ended = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const set = (byte >> bit) & 1;
      if (set && ended) return false;
      if (!set) ended = true;
    }
  }
  return true;
}

/** The names of a certificate that name constraints apply to. */
interface ConstrainedNames {
  dns: string[];
  ip: Uint8Array[];
  directories: pkijs.RelativeDistinguishedNames[];
  /** Names of forms this verifier does not match (rfc822, URI, other), by GeneralName tag. */
  otherForms: Set<number>;
}

function constrainedNames(parsed: Parsed): ConstrainedNames {
  const { cert } = parsed;
  const inspection = inspected(parsed);
  const altNames = inspection.ok ? inspection.facts.altNames : undefined;
  const names: ConstrainedNames = { dns: [], ip: [], directories: [], otherForms: new Set() };
  if (cert.subject.typesAndValues.length > 0) names.directories.push(cert.subject);
  if (attributes(cert.subject, OID.emailAddress).length > 0) names.otherForms.add(GN.rfc822Name);
  for (const name of altNames ?? []) {
    if (name.type === GN.dNSName) names.dns.push(String(name.value).toLowerCase());
    else if (name.type === GN.iPAddress) names.ip.push(octets(name.value) ?? new Uint8Array());
    else if (name.type === GN.directoryName) names.directories.push(name.value as pkijs.RelativeDistinguishedNames);
    else names.otherForms.add(name.type);
  }
  // Without a subjectAltName, a hostname in the CN is what a CN-trusting peer would act on (latchkey
  // itself identifies hosts by CN), so DNS constraints hold it too.
  if (!altNames)
    names.dns.push(
      ...attributes(cert.subject, OID.commonName)
        .map((cn) => cn.toLowerCase())
        .filter(isHostname),
    );
  return names;
}

function withinConstraints(names: ConstrainedNames, constraints: NonNullable<Facts["nameConstraints"]>): boolean {
  const bases = (subtrees: pkijs.GeneralSubtree[], tag: number): unknown[] =>
    subtrees.filter((s) => s.base.type === tag).map((s) => s.base.value);
  /** Every name of the form is in some permitted subtree (when there are any) and overlaps no excluded one. */
  const form = <T>(tag: number, values: T[], within: (name: T, c: unknown) => boolean, overlaps = within): boolean => {
    const permitted = bases(constraints.permitted, tag);
    const excluded = bases(constraints.excluded, tag);
    return values.every((v) => (permitted.length === 0 || permitted.some((c) => within(v, c))) && !excluded.some((c) => overlaps(v, c)));
  };
  const matched =
    form(GN.dNSName, names.dns, dnsWithin, dnsOverlaps) &&
    form(GN.iPAddress, names.ip, ipWithin) &&
    form(GN.directoryName, names.directories, directoryWithin);
  // Constraints on forms not matched here are failed closed when the certificate has such names.
  const constrainedForms = [...constraints.permitted, ...constraints.excluded].map((s) => s.base.type);
  return matched && !constrainedForms.some((tag) => names.otherForms.has(tag));
}

/** `name` is in the subtree `constraint` (RFC 5280 4.2.1.10); an invalid name is in none. */
function dnsWithin(name: string, constraint: unknown): boolean {
  if (!isPresentedDnsName(name)) return false;
  const c = String(constraint).toLowerCase();
  if (c === "") return true;
  if (c.startsWith(".")) return name.endsWith(c);
  return name === c || name.endsWith(`.${c}`);
}

/** Some name a wildcard `name` stands for is in the excluded subtree (or `name` is invalid). */
function dnsOverlaps(name: string, constraint: unknown): boolean {
  if (!isPresentedDnsName(name)) return true;
  if (dnsWithin(name, constraint)) return true;
  if (!name.startsWith("*.")) return false;
  const c = String(constraint).toLowerCase().replace(/^\./, "");
  const dot = c.indexOf(".");
  return dot > 0 && c.slice(dot + 1) === name.slice(2);
}

function ipWithin(address: Uint8Array, constraint: unknown): boolean {
  const range = octets(constraint);
  if (!range || (address.length !== 4 && address.length !== 16)) return false;
  if (range.length !== address.length * 2) return false;
  return address.every((byte, i) => ((byte ^ range[i]!) & range[i + address.length]!) === 0);
}

/** The constraint's RDNs are a prefix of the name's (both as PKIjs flattens them). */
function directoryWithin(name: pkijs.RelativeDistinguishedNames, constraint: unknown): boolean {
  const prefix = (constraint as pkijs.RelativeDistinguishedNames).typesAndValues;
  if (prefix.length > name.typesAndValues.length) return false;
  return prefix.every((tv, i) => name.typesAndValues[i]!.isEqual(tv));
}

// ---------------------------------------------------------------------------------------------
// IP addresses

function parseIp(text: string): Uint8Array | undefined {
  return text.includes(":") ? parseIpv6(text) : parseIpv4(text);
}

function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) return undefined;
  return new Uint8Array(parts.map(Number));
}

function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (const [i, piece] of pieces.entries()) {
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) out.push(parseInt(piece, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  return new Uint8Array(all.flatMap((g) => [g >> 8, g & 0xff]));
}

function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  if (bytes.length !== 16) return Buffer.from(bytes).toString("hex");
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  // RFC 5952: the longest run of two or more zero groups becomes "::".
  let best = { start: -1, length: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.length) best = { start: i, length: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.start < 0) return hex.join(":");
  return `${hex.slice(0, best.start).join(":")}::${hex.slice(best.start + best.length).join(":")}`;
}
