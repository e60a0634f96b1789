/**
 * The certificate verifier (src/core/ca/verify.ts) against the x509-limbo corpus
 * (C2SP/x509-limbo, 2023-12-02: 135 cases of RFC 5280 and Web PKI path validation, SPEC §9). Each
 * case is its own test, named by its id, and the verifier's answer is compared with the case's
 * expected_result. The two lists below, SKIPPED and DEVIATIONS, are the documentation of where the
 * verifier does not follow the corpus; docs/x509-limbo.md repeats them, and the last test holds
 * the two equal.
 *
 * A case maps onto the verifier as: trusted_certs → roots, untrusted_intermediates →
 * intermediates, validation_time (now when absent) → time, expected_peer_name → expectedName,
 * key_usage → keyUsage, max_chain_depth → maxChainDepth, extended_key_usage → extendedKeyUsage.
 * All cases are SERVER validations, so a case without extended_key_usage requires serverAuth, as
 * a TLS client would. allowCaLeaf is on: under RFC 5280 an end entity may be a CA certificate
 * (pathlen::validation-ignores-pathlen-in-leaf); latchkey's CA:FALSE rule for its own client
 * certificates is tested in verify-openssl.test.ts.
 *
 * The online::* cases are saved chains with a fixed validation_time: they run offline like the rest.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  CertificateVerifier,
  certificateDers,
  type ExtendedKeyUsage,
  type KeyUsageName,
  type RejectReason,
} from "../src/core/ca/verify.ts";
import { ROOT } from "./support.ts";

// The corpus (C2SP/x509-limbo, Apache-2.0 or BSD; see its LICENSE files) is kept with the tests.
const LIMBO = join(ROOT, "test", "fixtures", "x509-limbo", "limbo.json");
const DOC = join(ROOT, "docs", "x509-limbo.md");

/**
 * Cases not run, with the reason. None today: every case runs, those with optional `features`
 * too (where the verifier does not follow such a feature, the case is a deviation below); none
 * needs the network; none uses a field the mapping above lacks (expected_peer_names, an RFC822
 * peer name, another EKU, signature_algorithms: the harness refuses such a case until it is
 * listed here).
 */
const SKIPPED: Record<string, string> = {};

/**
 * Cases where the verifier knowingly answers otherwise than expected_result: `got` is its answer
 * (SUCCESS, or the reason it refuses), which the test asserts so that this list stays true.
 */
const DEVIATIONS: Record<string, { got: "SUCCESS" | RejectReason; why: string }> = {
  // Key identifiers help choose among candidate issuers and are never required: names and
  // signatures decide the path, as in OpenSSL, BoringSSL, Go and rustls-webpki. Requiring them
  // would refuse CAs those accept (an imported root or an old intermediate made without them).
  "rfc5280::aki::leaf-missing-aki": { got: "SUCCESS", why: "authorityKeyIdentifier is not required" },
  "rfc5280::aki::intermediate-missing-aki": { got: "SUCCESS", why: "authorityKeyIdentifier is not required" },
  "rfc5280::aki::cross-signed-root-missing-aki": { got: "SUCCESS", why: "authorityKeyIdentifier is not required (pedantic-rfc5280)" },
  "rfc5280::ski::root-missing-ski": { got: "SUCCESS", why: "subjectKeyIdentifier is not required" },
  "rfc5280::ski::intermediate-missing-ski": { got: "SUCCESS", why: "subjectKeyIdentifier is not required" },

  // The CA/B Baseline Requirements' profile for a root's authorityKeyIdentifier (7.1.2.1.3) is a
  // rule for issuing CAs; the verifier does not enforce it, so that a root made with, say,
  // OpenSSL's `authorityKeyIdentifier = keyid:always, issuer:always` still works as an anchor.
  "webpki::aki::root-with-aki-missing-keyidentifier": { got: "SUCCESS", why: "root authorityKeyIdentifier profile not enforced" },
  "webpki::aki::root-with-aki-authoritycertissuer": { got: "SUCCESS", why: "root authorityKeyIdentifier profile not enforced" },
  "webpki::aki::root-with-aki-authoritycertserialnumber": { got: "SUCCESS", why: "root authorityKeyIdentifier profile not enforced" },
  "webpki::aki::root-with-aki-all-fields": { got: "SUCCESS", why: "root authorityKeyIdentifier profile not enforced" },
  "webpki::aki::root-with-aki-ski-mismatch": { got: "SUCCESS", why: "root authorityKeyIdentifier profile not enforced" },

  // Extended key usage after RFC 5280 rather than the CA/B profile (pedantic-webpki-eku).
  "webpki::eku::ee-without-eku": {
    got: "SUCCESS",
    why: "no extKeyUsage means any usage (RFC 5280 4.2.1.12; rfc5280::eku::ee-without-eku expects exactly this)",
  },
  "webpki::eku::ee-anyeku": { got: "SUCCESS", why: "the leaf lists serverAuth; anyExtendedKeyUsage beside it is not refused" },
  "webpki::eku::ee-critical-eku": { got: "SUCCESS", why: "RFC 5280 4.2.1.12 lets extKeyUsage be critical" },
  "webpki::eku::root-has-eku": {
    got: "SUCCESS",
    why: "an issuer's extKeyUsage is honoured, not forbidden, and this root's lists serverAuth",
  },

  // RFC 5280 and the CA/B profile disagree; the verifier follows the CA/B profile
  // (webpki::nc::permitted-dns-match-noncritical expects the opposite of this case).
  "rfc5280::nc::permitted-dns-match-noncritical": {
    got: "SUCCESS",
    why: "non-critical nameConstraints are accepted, and enforced (CA/B BR 7.1.2.5.2; rfc5280-incompatible-with-webpki)",
  },
  "webpki::san::san-critical-with-nonempty-subject": {
    got: "SUCCESS",
    why: "a critical subjectAltName beside a non-empty subject is accepted: RFC 5280 4.2.1.6 says only SHOULD NOT",
  },

  // Serial numbers are identifiers to the verifier (the caller looks revocation up by them);
  // their RFC 5280 4.1.2.2 form is a rule for issuers (pedantic-serial-number).
  "rfc5280::serial::too-long": { got: "SUCCESS", why: "a serial over 20 octets is accepted" },
  "rfc5280::serial::zero": { got: "SUCCESS", why: "a zero serial is accepted" },

  // The case contradicts itself: it asks for the name example.com, but its leaf's only
  // subjectAltName is the directoryName CN=foo, which meets the name constraint and names no host.
  "rfc5280::nc::permitted-dn-match": { got: "name_mismatch", why: "the leaf has no dNSName to match the expected peer name example.com" },
};

interface PeerName {
  kind: "DNS" | "IP" | "RFC822";
  value: string;
}

interface Testcase {
  id: string;
  features: string[] | null;
  description: string;
  validation_kind: "CLIENT" | "SERVER";
  trusted_certs: string[];
  untrusted_intermediates: string[];
  peer_certificate: string;
  validation_time: string | null;
  signature_algorithms: string[] | null;
  key_usage: KeyUsageName[] | null;
  extended_key_usage: string[] | null;
  expected_result: "SUCCESS" | "FAILURE";
  expected_peer_name: PeerName | null;
  expected_peer_names: PeerName[] | null;
  max_chain_depth: number | null;
}

async function answer(c: Testcase): Promise<"SUCCESS" | RejectReason> {
  const usages = c.extended_key_usage ?? ["serverAuth"];
  if (usages.length !== 1 || (usages[0] !== "serverAuth" && usages[0] !== "clientAuth")) throw new Error(`unmapped EKU: ${usages}`);
  if (c.expected_peer_names?.length || c.expected_peer_name?.kind === "RFC822" || c.signature_algorithms?.length) {
    throw new Error("this case uses a field the harness does not map: list it in SKIPPED");
  }
  const verifier = new CertificateVerifier({
    roots: c.trusted_certs,
    intermediates: c.untrusted_intermediates,
    extendedKeyUsage: usages[0] as ExtendedKeyUsage,
    keyUsage: c.key_usage ?? [],
    allowCaLeaf: true,
    ...(c.max_chain_depth === null ? {} : { maxChainDepth: c.max_chain_depth }),
  });
  const name = c.expected_peer_name;
  const result = await verifier.verify(certificateDers(c.peer_certificate)[0]!, {
    time: c.validation_time ? new Date(c.validation_time) : new Date(),
    ...(name ? { expectedName: { kind: name.kind === "IP" ? ("ip" as const) : ("dns" as const), value: name.value } } : {}),
  });
  return result.ok ? "SUCCESS" : result.reason;
}

if (!existsSync(LIMBO)) {
  test.skip(`x509-limbo: the corpus is missing at ${LIMBO}, so none of its cases ran`, () => {});
} else {
  const cases = (JSON.parse(readFileSync(LIMBO, "utf8")) as { testcases: Testcase[] }).testcases;

  describe("x509-limbo", () => {
    for (const c of cases) {
      if (c.id in SKIPPED) {
        test.skip(c.id, () => {});
        continue;
      }
      const deviation = DEVIATIONS[c.id];
      test(c.id, async () => {
        const got = await answer(c);
        if (deviation) expect(got).toBe(deviation.got);
        // The reason rides along on both sides, so that a failure shows why the verifier refused.
        else expect({ result: got === "SUCCESS" ? "SUCCESS" : "FAILURE", got }).toEqual({ result: c.expected_result, got });
      });
    }

    test("the lists name corpus cases, a deviation answers otherwise than expected, and the doc lists both", () => {
      const ids = new Set(cases.map((c) => c.id));
      expect([...Object.keys(SKIPPED), ...Object.keys(DEVIATIONS)].filter((id) => !ids.has(id))).toEqual([]);
      for (const [id, { got }] of Object.entries(DEVIATIONS)) {
        expect({ id, expected: cases.find((c) => c.id === id)!.expected_result }).not.toEqual({
          id,
          expected: got === "SUCCESS" ? got : "FAILURE",
        });
      }
      const doc = readFileSync(DOC, "utf8");
      const skipped = Object.keys(SKIPPED).length;
      const deviating = Object.keys(DEVIATIONS).length;
      const counts = `**${cases.length - skipped - deviating} passed, ${skipped} skipped, ${deviating} deviating** (of ${cases.length})`;
      expect({ counts, found: doc.includes(counts) }).toEqual({ counts, found: true });
      // A listed case is a line "- `id` — why"; ids are the ones with "::".
      const listedInDoc = [...doc.matchAll(/^- `([^`]+::[^`]+)`/gm)].map((m) => m[1]);
      expect(listedInDoc.sort()).toEqual([...Object.keys(SKIPPED), ...Object.keys(DEVIATIONS)].sort());
    });
  });
}
