/**
 * The certificate verifier (src/core/ca/verify.ts) against certificates made by `openssl` in a
 * temp dir: an EC P-256 root, leaves and intermediates issued with `openssl ca` and extension
 * files, each case a certificate that must be accepted or refused for one stated reason. Ends with
 * the per-certificate cache of `verifyClientCertificate`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CertificateVerifier, certificateDers, clientCertificateVerifier, verifyClientCertificate } from "../src/core/ca/verify.ts";
import { tempDir } from "./support.ts";

const dir = tempDir("latchkey-verify-");
afterAll(() => dir.remove());

function openssl(...args: string[]): string {
  const run = Bun.spawnSync(["openssl", ...args], { cwd: dir.path, stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${run.stderr.toString()}`);
  return run.stdout.toString();
}

const CONFIG = `
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca ]
default_ca = issuer
[ issuer ]
database = ${dir.path}/index.txt
new_certs_dir = ${dir.path}
# -rand_serial picks the serials; this file is only required to exist in the configuration.
serial = ${dir.path}/serial
default_md = sha256
policy = policy_any
unique_subject = no
default_days = 30
[ policy_any ]
commonName = supplied
`;

const CLIENT_EXTENSIONS = [
  "basicConstraints = critical, CA:FALSE",
  "keyUsage = critical, digitalSignature",
  "extendedKeyUsage = clientAuth",
  "subjectAltName = DNS:host1.example, IP:127.0.0.1",
];
const CA_EXTENSIONS = ["basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign"];

/** A self-signed root with `extensions` (given with -addext); returns its name for `issue`. */
function root(name: string, extensions: string[]): string {
  openssl(
    "req",
    "-x509",
    "-config",
    "openssl.cnf",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-days",
    "3650",
    "-subj",
    `/CN=${name}`,
    ...extensions.flatMap((e) => ["-addext", e]),
  );
  return name;
}

/** A certificate for a new P-256 key, issued by `issuer` with `extensions` (an extension file). */
function issue(name: string, issuer: string, extensions: string[], dates: string[] = []): string {
  openssl(
    "req",
    "-new",
    "-config",
    "openssl.cnf",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    `/CN=${name}`,
  );
  writeFileSync(join(dir.path, `${name}.ext`), extensions.join("\n") + "\n");
  openssl(
    "ca",
    "-config",
    "openssl.cnf",
    "-batch",
    "-notext",
    "-rand_serial",
    "-cert",
    `${issuer}.pem`,
    "-keyfile",
    `${issuer}.key`,
    "-in",
    `${name}.csr`,
    "-out",
    `${name}.pem`,
    "-extfile",
    `${name}.ext`,
    ...dates,
  );
  return name;
}

const pem = (name: string) => readFileSync(join(dir.path, `${name}.pem`), "utf8");
const der = (name: string) => certificateDers(pem(name))[0]!;

let roots: string[];
beforeAll(() => {
  writeFileSync(join(dir.path, "openssl.cnf"), CONFIG);
  writeFileSync(join(dir.path, "index.txt"), "");
  root("root", CA_EXTENSIONS);
  root("other-root", CA_EXTENSIONS);
  root("root-pathlen0", ["basicConstraints = critical, CA:TRUE, pathlen:0", "keyUsage = critical, keyCertSign, cRLSign"]);
  roots = [pem("root")];

  issue("good", "root", CLIENT_EXTENSIONS);
  issue("expired", "root", CLIENT_EXTENSIONS, ["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"]);
  issue("not-yet-valid", "root", CLIENT_EXTENSIONS, ["-startdate", "20450101000000Z", "-enddate", "20460101000000Z"]);
  issue("by-other-root", "other-root", CLIENT_EXTENSIONS);
  issue("ca-leaf", "root", ["basicConstraints = critical, CA:TRUE", "extendedKeyUsage = clientAuth"]);
  issue("server-only", "root", [...CLIENT_EXTENSIONS.slice(0, 2), "extendedKeyUsage = serverAuth"]);
  issue("no-digital-signature", "root", [CLIENT_EXTENSIONS[0]!, "keyUsage = critical, keyEncipherment", "extendedKeyUsage = clientAuth"]);
  issue("unknown-critical", "root", [...CLIENT_EXTENSIONS, "1.3.6.1.4.1.55738.666.1 = critical, DER:0500"]);
  openssl(
    "req",
    "-x509",
    "-config",
    "openssl.cnf",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    "self-signed.key",
    "-out",
    "self-signed.pem",
    "-days",
    "30",
    "-subj",
    "/CN=self-signed",
    ...CLIENT_EXTENSIONS.flatMap((e) => ["-addext", e]),
  );

  issue("intermediate", "root", CA_EXTENSIONS);
  issue("via-intermediate", "intermediate", CLIENT_EXTENSIONS);
  issue("not-a-ca", "root", ["basicConstraints = critical, CA:FALSE", "keyUsage = critical, digitalSignature"]);
  issue("via-not-a-ca", "not-a-ca", CLIENT_EXTENSIONS);
  issue("under-pathlen0", "root-pathlen0", CA_EXTENSIONS);
  issue("via-under-pathlen0", "under-pathlen0", CLIENT_EXTENSIONS);
});

const now = () => new Date();

describe("verifyClientCertificate (clientAuth, CA:FALSE leaf, roots only)", () => {
  test("a clientAuth leaf issued by the root is accepted, with its chain and identity", async () => {
    const result = await verifyClientCertificate(der("good"), { roots, now: now() });
    if (!result.ok) throw new Error(`refused: ${result.reason}`);
    expect(result.chain).toEqual([der("good"), der("root")]);
    const serial = openssl("x509", "-in", "good.pem", "-noout", "-serial").trim().replace("serial=", "").toLowerCase();
    const fingerprint = openssl("x509", "-in", "good.pem", "-noout", "-fingerprint", "-sha256").trim().split("=")[1]!;
    const dates = openssl("x509", "-in", "good.pem", "-noout", "-dates").trim().split("\n");
    expect(result.leaf).toEqual({
      cn: "good",
      sans: { dns: ["host1.example"], ip: ["127.0.0.1"], email: [], uri: [] },
      serial: serial.replace(/^(00)+/, ""),
      notBefore: new Date(dates[0]!.split("=")[1]!),
      notAfter: new Date(dates[1]!.split("=")[1]!),
      fingerprint: fingerprint.replaceAll(":", "").toLowerCase(),
    });
  });

  test("the roots may be given as PEM text or DER", async () => {
    expect((await verifyClientCertificate(der("good"), { roots: [der("root")], now: now() })).ok).toBe(true);
  });

  const refusals: [string, string, () => Uint8Array][] = [
    ["an expired leaf", "expired", () => der("expired")],
    ["a leaf not yet valid", "not_yet_valid", () => der("not-yet-valid")],
    ["a leaf signed by another root", "unknown_issuer", () => der("by-other-root")],
    ["a leaf with CA:TRUE", "leaf_is_ca", () => der("ca-leaf")],
    ["a leaf for serverAuth only", "eku", () => der("server-only")],
    ["a leaf whose keyUsage lacks digitalSignature", "key_usage", () => der("no-digital-signature")],
    ["a leaf with an unknown critical extension", "critical_extension", () => der("unknown-critical")],
    ["a self-signed leaf that is not a root", "unknown_issuer", () => der("self-signed")],
    ["a leaf whose signature was tampered with", "bad_signature", () => tampered(der("good"))],
    ["garbage bytes", "malformed", () => crypto.getRandomValues(new Uint8Array(300))],
    ["a truncated certificate", "malformed", () => der("good").subarray(0, 200)],
    ["a certificate with bytes after it", "malformed", () => new Uint8Array([...der("good"), 0])],
    ["an empty input", "malformed", () => new Uint8Array()],
  ];
  for (const [what, reason, input] of refusals) {
    test(`${what} is refused: ${reason}`, async () => {
      expect(await verifyClientCertificate(input(), { roots, now: now() })).toEqual({ ok: false, reason: reason as never });
    });
  }
});

describe("CertificateVerifier with intermediates and policies", () => {
  const verifier = (rootNames: string[], intermediates: string[], options: { allowCaLeaf?: boolean } = {}) =>
    new CertificateVerifier({
      roots: rootNames.map(pem),
      intermediates: intermediates.map(pem),
      extendedKeyUsage: "clientAuth",
      ...options,
    });

  test("a leaf issued by an intermediate CA chains through it to the root", async () => {
    const result = await verifier(["root"], ["intermediate"]).verify(der("via-intermediate"), { time: now() });
    expect(result.ok && result.chain).toEqual([der("via-intermediate"), der("intermediate"), der("root")]);
  });

  test("without the intermediate there is no path", async () => {
    expect(await verifier(["root"], []).verify(der("via-intermediate"), { time: now() })).toEqual({ ok: false, reason: "unknown_issuer" });
  });

  test("an intermediate without CA:TRUE cannot issue", async () => {
    expect(await verifier(["root"], ["not-a-ca"]).verify(der("via-not-a-ca"), { time: now() })).toEqual({ ok: false, reason: "not_a_ca" });
  });

  test("a root with pathlen:0 cannot have an intermediate below it", async () => {
    const result = await verifier(["root-pathlen0"], ["under-pathlen0"]).verify(der("via-under-pathlen0"), { time: now() });
    expect(result).toEqual({ ok: false, reason: "path_length" });
  });

  test("a CA:TRUE leaf is accepted when the policy allows it", async () => {
    expect((await verifier(["root"], [], { allowCaLeaf: true }).verify(der("ca-leaf"), { time: now() })).ok).toBe(true);
  });

  test("a self-signed certificate given as a trust anchor is accepted as itself", async () => {
    const result = await verifier(["self-signed"], []).verify(der("self-signed"), { time: now() });
    expect(result.ok && result.chain).toEqual([der("self-signed")]);
  });

  test("an expected name must be one of the leaf's subjectAltNames", async () => {
    const v = verifier(["root"], []);
    const at = { time: now() };
    expect((await v.verify(der("good"), { ...at, expectedName: { kind: "dns", value: "HOST1.example." } })).ok).toBe(true);
    expect((await v.verify(der("good"), { ...at, expectedName: { kind: "ip", value: "127.0.0.1" } })).ok).toBe(true);
    expect(await v.verify(der("good"), { ...at, expectedName: { kind: "dns", value: "good" } })).toEqual({
      ok: false,
      reason: "name_mismatch",
    });
    expect(await v.verify(der("good"), { ...at, expectedName: { kind: "ip", value: "::1" } })).toEqual({
      ok: false,
      reason: "name_mismatch",
    });
  });
});

describe("the cache of verifyClientCertificate", () => {
  test("a certificate seen again costs no chain work, and its validity is still checked at each call", async () => {
    const { counters } = clientCertificateVerifier(roots);
    const leaf = der("good");
    const copy = new Uint8Array(leaf); // the cache is keyed by content, not by the buffer
    const first = await verifyClientCertificate(leaf, { roots, now: now() });
    const before = { ...counters };
    const second = await verifyClientCertificate(copy, { roots, now: now() });
    expect(second).toEqual(first);
    expect(counters).toEqual({ analyses: before.analyses, cacheHits: before.cacheHits + 1 });

    const afterExpiry = first.ok ? first.leaf.notAfter.getTime() + 1000 : 0;
    expect(await verifyClientCertificate(leaf, { roots, now: afterExpiry })).toEqual({ ok: false, reason: "expired" });
    expect(counters.analyses).toBe(before.analyses);
  });

  test("the cache keeps at most cacheSize certificates, dropping the least recently used", async () => {
    const v = new CertificateVerifier({ roots, extendedKeyUsage: "clientAuth", cacheSize: 2 });
    const at = { time: now() };
    for (const name of ["good", "expired", "good", "server-only"]) await v.verify(der(name), at);
    expect(v.counters).toEqual({ analyses: 3, cacheHits: 1 });
    await v.verify(der("good"), at); // still cached: used more recently than "expired"
    await v.verify(der("expired"), at); // dropped when "server-only" came in
    expect(v.counters).toEqual({ analyses: 4, cacheHits: 2 });
  });

  test("a certificate no root vouches for is not kept, so that such certificates cannot push out good entries", async () => {
    const v = new CertificateVerifier({ roots, extendedKeyUsage: "clientAuth" });
    const at = { time: now() };
    for (const input of [der("by-other-root"), der("by-other-root"), tampered(der("good")), tampered(der("good"))]) {
      expect((await v.verify(input, at)).ok).toBe(false);
    }
    expect(v.counters).toEqual({ analyses: 4, cacheHits: 0 });
  });
});

/** The DER with one bit of the signature value (its last byte) flipped. */
function tampered(certificate: Uint8Array): Uint8Array {
  const copy = new Uint8Array(certificate);
  copy[copy.length - 1]! ^= 0x01;
  return copy;
}
