/**
 * Data for the `register`, `idle` and `enroll-csr` scenarios of `scripts/bench/run.ts`: inserts
 * pending enrollment keys straight through bun:sqlite (the running server shares the database),
 * reads the database back after the registrations to check every binding, makes the agents'
 * certificate requests before the clock starts, and checks every certificate issued for them.
 *
 * Keys are made and hashed by this file's own code, the way SPEC §4 and the server store them
 * (`XXXX-XXXX-XXXX` from the alphabet without 0 O 1 I L; key_hash = SHA-256 hex of the key without
 * dashes, upper case): if the server's scheme changes, the scenario fails with AUTH_FAILED instead
 * of measuring something else.
 */
import { Database } from "bun:sqlite";
import { createPublicKey, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCertificateRequest } from "../../src/client/csr.ts";

const KEY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const DATABASE_FILE = "latchkey.db";

function randomKey(): string {
  const limit = 256 - (256 % KEY_ALPHABET.length);
  let raw = "";
  while (raw.length < 12) {
    for (const byte of crypto.getRandomValues(new Uint8Array(24))) {
      if (byte < limit && raw.length < 12) raw += KEY_ALPHABET[byte % KEY_ALPHABET.length];
    }
  }
  return `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8)}`;
}

const sha256Hex = (data: string | Uint8Array) => new Bun.CryptoHasher("sha256").update(data).digest("hex");

function open(dataDir: string): Database {
  const db = new Database(join(dataDir, DATABASE_FILE), { strict: true });
  db.run("PRAGMA busy_timeout = 10000");
  return db;
}

/** Inserts `count` new pending keys in one transaction and writes them, one a line, to `keysFile`. */
export function seedEnrollmentKeys(dataDir: string, count: number, keysFile: string): { keys: number; seconds: number } {
  const started = performance.now();
  const db = open(dataDir);
  try {
    const insert = db.query(
      "INSERT INTO enrollment_keys (key, key_hash, label, created_at) VALUES (?, ?, 'bench', ?) ON CONFLICT DO NOTHING",
    );
    const keys: string[] = [];
    const now = Date.now();
    db.transaction(() => {
      while (keys.length < count) {
        const key = randomKey();
        if (insert.run(key, sha256Hex(key.replaceAll("-", "")), now).changes === 1) keys.push(key);
      }
    })();
    writeFileSync(keysFile, `${keys.join("\n")}\n`);
    return { keys: keys.length, seconds: (performance.now() - started) / 1000 };
  } finally {
    db.close();
  }
}

export interface BindingReport {
  /** Keys the generator was given. */
  keys: number;
  /** Registrations the server acknowledged (`registered: true`), per the generator. */
  acknowledged: number;
  active: number;
  pending: number;
  revoked: number;
  /** Distinct client_uuid over the active keys. */
  distinctUuids: number;
  /** Acknowledged (uuid, key) pairs whose key is not active and bound to exactly that uuid. */
  wrongBindings: number;
  /** UUIDs bound to more than one key. */
  doubleBound: number;
  /** Rows in `clients`. */
  clients: number;
  examples: string[];
}

/** Reads every key of the run back: each acknowledged one must be active and bound to its UUID. */
export function verifyBindings(dataDir: string, keysFile: string, assignmentsFile: string): BindingReport {
  const keys = readFileSync(keysFile, "utf8").split("\n").filter(Boolean);
  const pairs = readFileSync(assignmentsFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => line.split(" ") as [string, string]);
  const db = open(dataDir);
  try {
    const byKey = new Map<string, { status: string; client_uuid: string | null }>();
    for (const row of db
      .query<{ key: string; status: string; client_uuid: string | null }, []>(
        "SELECT key, status, client_uuid FROM enrollment_keys WHERE label = 'bench'",
      )
      .all()) {
      byKey.set(row.key, row);
    }
    const counts = { active: 0, pending: 0, revoked: 0 };
    for (const key of keys) {
      const status = byKey.get(key)?.status as keyof typeof counts | undefined;
      if (status) counts[status]++;
    }
    const distinctUuids = db
      .query<{ n: number }, []>("SELECT count(DISTINCT client_uuid) AS n FROM enrollment_keys WHERE label = 'bench' AND status = 'active'")
      .get()!.n;
    const doubleBound = db
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM " +
          "(SELECT client_uuid FROM enrollment_keys WHERE client_uuid IS NOT NULL GROUP BY client_uuid HAVING count(*) > 1)",
      )
      .get()!.n;
    const examples: string[] = [];
    let wrongBindings = 0;
    for (const [uuid, key] of pairs) {
      const row = byKey.get(key);
      if (!row || row.status !== "active" || row.client_uuid !== uuid) {
        wrongBindings++;
        if (examples.length < 5)
          examples.push(`${key} acknowledged for ${uuid} but is ${row ? `${row.status} / ${row.client_uuid}` : "missing"}`);
      }
    }
    const clients = db.query<{ n: number }, []>("SELECT count(*) AS n FROM clients").get()!.n;
    return { keys: keys.length, acknowledged: pairs.length, ...counts, distinctUuids, wrongBindings, doubleBound, clients, examples };
  } finally {
    db.close();
  }
}

/** One pre-made agent of `enroll-csr`: its hostname, and the request and key the agent would make for it. */
export interface ClientRequest {
  hostname: string;
  /** PKCS#10, PEM, CN = hostname: what the agent sends in `client/csr`. */
  csr: string;
  /** The request's private key (PKCS#8 PEM), kept to check that each certificate is for it. */
  key: string;
}

/** Hostnames `bench-000000` …, each with a fresh P-256 key and a request made as the agent makes it. */
export async function writeClientRequests(count: number, requestsFile: string): Promise<{ requests: number; seconds: number }> {
  const started = performance.now();
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const hostname = `bench-${String(i).padStart(6, "0")}`;
    const { csrPem, keyPem } = await createCertificateRequest(hostname);
    lines.push(JSON.stringify({ hostname, csr: csrPem, key: keyPem } satisfies ClientRequest));
  }
  writeFileSync(requestsFile, `${lines.join("\n")}\n`);
  return { requests: lines.length, seconds: (performance.now() - started) / 1000 };
}

/** What ws-clients.ts wrote for each certificate it received (`--issued`). */
interface IssuedLine {
  uuid: string;
  key: string;
  hostname: string;
  serial: unknown;
  certificate: unknown;
  ca: unknown;
  ca_fingerprint: unknown;
}

export interface CertificateReport {
  /** Certificates the server answered with, per the generator. */
  acknowledged: number;
  /** Distinct serials among them. */
  distinctSerials: number;
  /** Client certificates in the database (kind 'client'): none more than acknowledged. */
  rows: number;
  /** Acknowledged certificates with something wrong (see `examples`), from the database or the certificate itself. */
  wrong: number;
  examples: string[];
}

const spki = (key: { export(options: { type: "spki"; format: "der" }): Buffer }) => key.export({ type: "spki", format: "der" });
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/**
 * Checks every certificate the generator received: its row in `certificates` (kind 'client',
 * client_uuid = the registering UUID, which is also the one its key is bound to, status valid,
 * common_name and hostname = the client's hostname, fingerprint = the returned DER's), its
 * signature against the returned root (the database's current root, whose fingerprint was
 * returned), its subject and clientAuth, and its public key = that of the request's key.
 */
export function verifyCertificates(dataDir: string, issuedFile: string, requestsFile: string): CertificateReport {
  const requestKeys = new Map<string, Buffer>();
  for (const line of readFileSync(requestsFile, "utf8").split("\n").filter(Boolean)) {
    const request = JSON.parse(line) as ClientRequest;
    requestKeys.set(request.hostname, spki(createPublicKey(request.key)));
  }
  const issued = readFileSync(issuedFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as IssuedLine);
  const db = open(dataDir);
  try {
    const root = db
      .query<{ certificate_pem: string; fingerprint: string }, []>(
        "SELECT certificate_pem, fingerprint FROM ca_roots WHERE retired_at IS NULL",
      )
      .get();
    const certificate = db.query<
      { kind: string; client_uuid: string | null; status: string; common_name: string; hostname: string | null; fingerprint: string },
      [string]
    >("SELECT kind, client_uuid, status, common_name, hostname, fingerprint FROM certificates WHERE serial = ?");
    const keyOwner = db.query<{ client_uuid: string | null }, [string]>("SELECT client_uuid FROM enrollment_keys WHERE key = ?");
    const rows = db.query<{ n: number }, []>("SELECT count(*) AS n FROM certificates WHERE kind = 'client'").get()!.n;
    const roots = new Map<string, X509Certificate>();
    const examples: string[] = [];
    let wrong = 0;
    for (const line of issued) {
      const why = certificateProblem(line, root, certificate.get(String(line.serial)), keyOwner.get(line.key), requestKeys, roots);
      if (why === null) continue;
      wrong++;
      if (examples.length < 5) examples.push(`${line.hostname} (${String(line.serial)}): ${why}`);
    }
    return { acknowledged: issued.length, distinctSerials: new Set(issued.map((i) => String(i.serial))).size, rows, wrong, examples };
  } finally {
    db.close();
  }
}

function certificateProblem(
  line: IssuedLine,
  root: { certificate_pem: string; fingerprint: string } | null,
  row: {
    kind: string;
    client_uuid: string | null;
    status: string;
    common_name: string;
    hostname: string | null;
    fingerprint: string;
  } | null,
  keyOwner: { client_uuid: string | null } | null,
  requestKeys: Map<string, Buffer>,
  roots: Map<string, X509Certificate>,
): string | null {
  if (typeof line.certificate !== "string" || typeof line.ca !== "string") return "no certificate or root PEM in the reply";
  if (!row) return "not in the certificates table";
  if (row.kind !== "client") return `kind ${row.kind}`;
  if (row.client_uuid !== line.uuid) return `client_uuid ${row.client_uuid}, registered as ${line.uuid}`;
  if (keyOwner?.client_uuid !== line.uuid) return `its enrollment key is bound to ${keyOwner?.client_uuid ?? "nobody"}, not ${line.uuid}`;
  if (row.status !== "valid") return `status ${row.status}`;
  if (row.common_name !== line.hostname || row.hostname !== line.hostname)
    return `common_name ${row.common_name}, hostname ${row.hostname}`;
  if (!root || line.ca_fingerprint !== root.fingerprint || line.ca.trim() !== root.certificate_pem.trim()) {
    return "the returned root is not the database's current root";
  }
  let ca = roots.get(line.ca);
  if (!ca) roots.set(line.ca, (ca = new X509Certificate(line.ca)));
  if (sha256Hex(ca.raw) !== root.fingerprint) return "ca_fingerprint is not the SHA-256 of the returned root";
  const leaf = new X509Certificate(line.certificate);
  if (sha256Hex(leaf.raw) !== row.fingerprint) return "the returned certificate is not the one recorded";
  if (BigInt(`0x${leaf.serialNumber}`) !== BigInt(`0x${String(line.serial)}`)) return `serial ${leaf.serialNumber} in the certificate`;
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return "does not verify against the returned root";
  if (!leaf.subject.split("\n").includes(`CN=${line.hostname}`)) return `subject ${leaf.subject.replaceAll("\n", ", ")}`;
  if (!(leaf.keyUsage ?? []).includes(CLIENT_AUTH)) return "no clientAuth extended key usage";
  const requested = requestKeys.get(line.hostname);
  if (!requested) return "no request was made for this hostname";
  if (!spki(leaf.publicKey).equals(requested)) return "its public key is not the request's";
  return null;
}
