/**
 * Data for the `register` and `idle` scenarios of `scripts/bench/run.ts`: inserts pending
 * enrollment keys straight through bun:sqlite (the running server shares the database), and reads
 * the database back after the registrations to check every binding.
 *
 * Keys are made and hashed by this file's own code, the way SPEC §4 and the server store them
 * (`XXXX-XXXX-XXXX` from the alphabet without 0 O 1 I L; key_hash = SHA-256 hex of the key without
 * dashes, upper case): if the server's scheme changes, the scenario fails with AUTH_FAILED instead
 * of measuring something else.
 */
import { Database } from "bun:sqlite";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

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

const sha256Hex = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");

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
