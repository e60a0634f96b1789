/**
 * What `check`, the hot path (every start of every licensed application), reads from memory
 * instead of the database: license keys by token, each machine's activation and nonce-less
 * receipt, and each application's failed-check outcomes. All of it is dropped when another process
 * has written to the database (`otherWriters`, given by whoever opened it), when this process
 * changes a key, and past MAX_ENTRIES; one machine's entry when its activation is removed.
 *
 * What is cached is returned as a value, at once; only a miss returns a promise (of a database
 * read), so a check served from memory never waits.
 */
import type { LicenseRow, LicenseStore } from "../../db/licenses.ts";
import type { CheckFailed, CheckPassed, MaybePromise } from "./wire.ts";

/** One machine of one key, as checks see it. */
export interface MachineEntry {
  /** Its activation's id; null when it has none (then looked up again at the next check). */
  activationId: number | null;
  /** Its latest nonce-less receipt as a passed check: the same object until `until`. */
  passed: CheckPassed | null;
  until: number;
}

/** A failed check's two outcomes, with one application's support message. */
export interface CheckFailures {
  readonly invalid: CheckFailed;
  readonly expired: CheckFailed;
}

function checkFailures(supportMessage?: string): CheckFailures {
  if (supportMessage === undefined) return { invalid: { kind: "invalid" }, expired: { kind: "expired" } };
  return { invalid: { kind: "invalid", supportMessage }, expired: { kind: "expired", supportMessage } };
}

/** A failed check without `app_id`: the seed's failure, no support message. */
const SEED_FAILURES = checkFailures();
/** A failed check whose `app_id` names no application: an empty message, as activate's failures have. */
const NO_APP_FAILURES = checkFailures("");

const MAX_ENTRIES = 200_000;

/** The first 48 bits of a SHA-256 digest, as a number: a Map key that costs no string. */
function tokenKey(digest: Uint8Array): number {
  return digest[0]! * 2 ** 40 + digest[1]! * 2 ** 32 + digest[2]! * 2 ** 24 + digest[3]! * 2 ** 16 + digest[4]! * 2 ** 8 + digest[5]!;
}

/**
 * Constant-time comparison of two tokens, like secrets.ts's sameSecret but without its two Buffer
 * copies: it runs on every check, where those allocations cost about 5% of the server's CPU.
 */
function sameToken(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export class CheckCache {
  /** Keyed by tokenKey of the token's SHA-256: no hex string per check. */
  private readonly keys = new Map<number, LicenseRow>();
  /** Per key, per machine: nested maps keyed by a number and the request's own hwid string, so no key string is built per check. */
  private readonly machines = new Map<number, Map<string, MachineEntry>>();
  private machineCount = 0;
  /**
   * Per application, for the ids of existing ones only: an id of no application is looked up each
   * time (a primary-key read), so that made-up ids cannot fill memory.
   */
  private readonly failures = new Map<number, CheckFailures>();
  /**
   * Counts the times keys or applications were forgotten: a database read that began before one
   * may have read what was forgotten, and is then not cached.
   */
  private generation = 0;
  /** Where each check's token digest is written: one buffer, reused. */
  private readonly digest = new Uint8Array(32);

  constructor(
    private readonly store: LicenseStore,
    /** True when another process has written to the database since it last said so; called before every check, so cheap. */
    private readonly otherWriters: () => boolean,
  ) {}

  /** Before each check: drops everything when another process has committed, or when it has grown too large. */
  refresh(): void {
    if (this.otherWriters() || this.keys.size + this.machineCount > MAX_ENTRIES) this.clear();
  }

  clear(): void {
    this.generation++;
    this.keys.clear();
    this.failures.clear();
    this.machines.clear();
    this.machineCount = 0;
  }

  /** An application changed or went: so may have its support message. */
  forgetApps(): void {
    this.generation++;
    this.failures.clear();
  }

  /** The machine's activation is gone: so are its cached activation and receipt. */
  forgetMachine(licenseId: number, hwid: string): void {
    if (this.machines.get(licenseId)?.delete(hwid)) this.machineCount--;
  }

  /**
   * The key a token belongs to, found through the SHA-256 of the token, then compared in constant
   * time: at once when cached, else a promise of the database's answer.
   */
  key(token: string): MaybePromise<LicenseRow | null> {
    const digest = this.digest;
    // The digest sha256Hex would give, written into the reused buffer: its hex is made only on a miss.
    Bun.SHA256.hash(token, digest);
    const key = tokenKey(digest);
    const row = this.keys.get(key);
    if (row !== undefined && sameToken(row.token, token)) return row;
    // Not cached yet, or another token whose digest starts alike (then the index decides, uncached).
    return this.readKey(token, key, digest.toHex(), row === undefined);
  }

  private async readKey(token: string, key: number, hash: string, cache: boolean): Promise<LicenseRow | null> {
    const generation = this.generation;
    const found = await this.store.byTokenHash(hash);
    if (!found || !sameToken(found.token, token)) return null;
    if (cache && generation === this.generation && !this.keys.has(key)) this.keys.set(key, found);
    return found;
  }

  machine(licenseId: number, hwid: string): MachineEntry {
    let perKey = this.machines.get(licenseId);
    if (!perKey) this.machines.set(licenseId, (perKey = new Map()));
    let entry = perKey.get(hwid);
    if (!entry) {
      perKey.set(hwid, (entry = { activationId: null, passed: null, until: 0 }));
      this.machineCount++;
    }
    return entry;
  }

  /**
   * The machine's entry with its activation id looked up (still null: not activated): at once
   * when the id is known, else a promise of the entry once the database has been read.
   */
  activatedMachine(licenseId: number, hwid: string): MaybePromise<MachineEntry> {
    const entry = this.machine(licenseId, hwid);
    return entry.activationId === null ? this.readActivation(entry, licenseId, hwid) : entry;
  }

  /**
   * Fills in the entry's activation id. An entry dropped meanwhile (its activation removed, or
   * the cache cleared) is no longer in the cache: filling it in changes nothing there.
   */
  private async readActivation(entry: MachineEntry, licenseId: number, hwid: string): Promise<MachineEntry> {
    const activation = await this.store.activation(licenseId, hwid);
    if (activation !== null) entry.activationId = activation.id;
    return entry;
  }

  /** A failed check's outcomes for a check that named `appId` (undefined: it named none): at once when cached. */
  failuresFor(appId: number | undefined): MaybePromise<CheckFailures> {
    if (appId === undefined) return SEED_FAILURES;
    return this.failures.get(appId) ?? this.readFailures(appId);
  }

  private async readFailures(appId: number): Promise<CheckFailures> {
    const generation = this.generation;
    const app = await this.store.app(appId);
    if (!app) return NO_APP_FAILURES;
    const failures = checkFailures(app.support_message);
    if (generation === this.generation) this.failures.set(appId, failures);
    return failures;
  }
}
