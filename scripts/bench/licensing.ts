/**
 * Data for the licensing scenarios of `scripts/bench/run.ts`: seeds a data directory with license
 * keys and activations straight through bun:sqlite (SQLite is shared with the running server,
 * so this may run before or while it serves), and reads the database back afterwards to check
 * that every activation the server acknowledged is there.
 *
 * The keys are written the way the server stores them (token, SHA-256 hex of the token, app,
 * seats), but by this file's own code rather than the server's: if the server's lookup scheme
 * ever changes, the `check` scenario fails with 404s instead of silently measuring something else.
 */
import { Database } from "bun:sqlite";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const TOKEN_LENGTH = 25;
const DATABASE_FILE = "latchkey.db";

/** 25 characters A-Z0-9, the seed's token shape, from a CSPRNG without modulo bias. */
function randomToken(): string {
  const limit = 256 - (256 % TOKEN_ALPHABET.length);
  let out = "";
  while (out.length < TOKEN_LENGTH) {
    for (const byte of crypto.getRandomValues(new Uint8Array(32))) {
      if (byte < limit && out.length < TOKEN_LENGTH) out += TOKEN_ALPHABET[byte % TOKEN_ALPHABET.length];
    }
  }
  return out;
}

const sha256Hex = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");

function open(dataDir: string): Database {
  const db = new Database(join(dataDir, DATABASE_FILE), { strict: true });
  db.run("PRAGMA busy_timeout = 10000");
  db.run("PRAGMA synchronous = FULL");
  return db;
}

export interface SeedPlan {
  appId: number;
  /** License keys to insert. */
  keys: number;
  /** How many of them get one activated machine each. */
  activatedKeys: number;
  /** How many of the activated keys get `extraMachines` more machines (several machines per key). */
  multiMachineKeys: number;
  extraMachines: number;
}

export interface SeedResult {
  keys: number;
  activations: number;
  seconds: number;
  /** Every activated (token, hwid) pair, shuffled. */
  pairs: { token: string; hwid: string }[];
}

/** Inserts the keys and activations in one immediate transaction. */
export function seedLicenses(dataDir: string, plan: SeedPlan): SeedResult {
  const started = performance.now();
  const db = open(dataDir);
  try {
    const now = Date.now();
    const insertLicense = db.query(
      `INSERT INTO licenses (app_id, token, token_hash, activations_allowed, activations_used, memo, created_at)
       VALUES (?, ?, ?, ?, ?, 'bench', ?)`,
    );
    const insertActivation = db.query(
      "INSERT INTO activations (license_id, hwid, machine, user, address, created_at) VALUES (?, ?, ?, 'bench', '127.0.0.1', ?)",
    );
    const pairs: { token: string; hwid: string }[] = [];
    db.transaction(() => {
      for (let i = 0; i < plan.keys; i++) {
        const token = randomToken();
        const machines = i < plan.multiMachineKeys ? 1 + plan.extraMachines : i < plan.activatedKeys ? 1 : 0;
        // A mix of seat counts, always enough for the machines seeded on the key.
        const allowed = i % 4 === 3 ? -1 : Math.max(machines, 1 + (i % 5));
        const id = Number(insertLicense.run(plan.appId, token, sha256Hex(token), allowed, machines, now).lastInsertRowid);
        for (let m = 0; m < machines; m++) {
          const hwid = `hw-${id.toString(16)}-${m}-${sha256Hex(`${token}/${m}`).slice(0, 16)}`;
          insertActivation.run(id, hwid, `PC-${id}-${m}`, now);
          pairs.push({ token, hwid });
        }
      }
    }).immediate();
    // Fold the seed (~22 MB of WAL for 100,000 keys) into the database file now: otherwise the
    // server's first commit would checkpoint it, inside the measurement's warm-up or first run.
    db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    // Fisher–Yates, so that consecutive requests go to unrelated keys.
    for (let i = pairs.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [pairs[i], pairs[j]] = [pairs[j]!, pairs[i]!];
    }
    const counts = db
      .query<{ keys: number; activations: number }, []>(
        "SELECT (SELECT count(*) FROM licenses) AS keys, (SELECT count(*) FROM activations) AS activations",
      )
      .get()!;
    return { keys: counts.keys, activations: counts.activations, seconds: (performance.now() - started) / 1000, pairs };
  } finally {
    db.close();
  }
}

/** One "TOKEN HWID" per line: what check.lua reads. */
export function writePairs(file: string, pairs: { token: string; hwid: string }[]): void {
  writeFileSync(file, pairs.map((p) => `${p.token} ${p.hwid}\n`).join(""));
}

export interface DurabilityReport {
  /** 201s that activate.lua saw, summed over its per-thread files. */
  acknowledged: number;
  /** Activation rows of the benchmark key in the database. */
  rows: number;
  /** Acknowledged machines with no row: must be 0. */
  missing: string[];
  /** Rows with no 201 seen by wrk: requests still in flight when a run's time was up. */
  unacknowledged: number;
  /** The key's seat counter, which must equal `rows`. */
  activationsUsed: number;
  totalActivations: number;
}

/**
 * Reads the hwids that activate.lua wrote for every 201 (`acked-*.txt` in `ackDir`) and checks
 * that each one has its activation row, and that the key's seat counter agrees with the rows.
 * Meant to run after the server was killed with SIGKILL, so that only what was committed counts.
 */
export function verifyActivations(dataDir: string, token: string, ackDir: string): DurabilityReport {
  const acknowledged = new Set<string>();
  let ackLines = 0;
  for (const name of readdirSync(ackDir).filter((n) => n.startsWith("acked-") && n.endsWith(".txt"))) {
    for (const line of readFileSync(join(ackDir, name), "utf8").split("\n")) {
      if (line === "") continue;
      acknowledged.add(line);
      ackLines++;
    }
  }
  if (ackLines !== acknowledged.size)
    throw new Error(`activate.lua recorded ${ackLines - acknowledged.size} machine(s) twice: the hwids were not unique`);
  // Read-write, so that SQLite can rebuild the WAL index a killed server left behind.
  const db = open(dataDir);
  try {
    const license = db
      .query<{ id: number; activations_used: number; total_activations: number }, [string]>(
        "SELECT id, activations_used, total_activations FROM licenses WHERE token_hash = ?",
      )
      .get(sha256Hex(token));
    if (!license) throw new Error("the benchmark's activation key is missing from the database");
    const stored = new Set(
      db
        .query<{ hwid: string }, [number]>("SELECT hwid FROM activations WHERE license_id = ?")
        .all(license.id)
        .map((r) => r.hwid),
    );
    const missing = [...acknowledged].filter((hwid) => !stored.has(hwid));
    return {
      acknowledged: acknowledged.size,
      rows: stored.size,
      missing,
      unacknowledged: [...stored].filter((hwid) => !acknowledged.has(hwid)).length,
      activationsUsed: license.activations_used,
      totalActivations: license.total_activations,
    };
  } finally {
    db.close();
  }
}
