import type { ExchangeKind, ExchangeStore } from "../db/exchanges.ts";
import type { Sql } from "../db/sql.ts";
import type { ThrottleStore } from "../db/throttles.ts";
import { createHmac } from "node:crypto";
import type { UserRow } from "../db/users.ts";
import type { Accounts } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { AppError, notFound, unauthorized } from "./errors.ts";
import type { EventHub } from "./events.ts";
import type { Metrics } from "./metrics.ts";
import { burnDecoyVerification, passwordInput, verifyPassword, VerifyQueue, type VerifyQueueLimits } from "./passwords.ts";
import {
  buildServerFirst,
  decoyCredentials,
  newServerNonce,
  parseClientFinal,
  parseClientFirst,
  verifyClientFinal,
  type ClientFirst,
  type ScramCredentials,
} from "./scram.ts";
import type { Principal, Sessions } from "./sessions.ts";
import type { Stats } from "./stats.ts";
import type { ProofKind } from "./key-proofs.ts";
import { randomFromAlphabet, randomHex, sameSecret, sha256Hex } from "./secrets.ts";
import { throttled, Throttle, WindowThrottle, type Limiter } from "./throttle.ts";

export interface Login {
  token: string;
  role: UserRow["role"];
  username: string;
  expiresIn: number;
  sessionId: string;
  /** The new session's caller, as stored (a connection signs in with it without a lookup). */
  principal: Principal;
}

/** How the server tells an imported account's client to prepare its password for SCRAM. */
export interface Prehash {
  algorithm: "sha256-hex(password+salt)";
  salt: string;
}

/** What a SCRAM exchange keeps between its two steps (in the database: another node may finish it). */
interface ScramExchange {
  clientFirst: ClientFirst;
  serverFirst: string;
  /** The account's credential version when the exchange started (null: no such account then): a session needs it unchanged. */
  credentialVersion: number | null;
}

/** What a wsauth challenge keeps until its response. */
interface LegacyNonce {
  /** The account's credential version when the nonce was given (null: no such account then). */
  credentialVersion: number | null;
}

/** An `rpc/auth_ssl` test string, outstanding on one connection (SPEC §3). */
interface CertificateChallenge {
  /** Unknown until a key names the account: the table's per-user cleanup never applies. */
  username: "";
  testString: string;
  expiresAt: number;
  address: string | null;
}

/** The registered key that made a certificate login's proof, and the account it names. */
export interface CertificateMatch {
  /** The account as it was when the key was matched: a session needs it unchanged. */
  user: UserRow;
  kind: ProofKind;
  /** Why the key may not sign in although its proof holds (its certificate expired or was revoked), or null. */
  refusal: string | null;
  /** Whether its registration is still live (asked again just before the session is created). */
  stillRegistered(): Promise<boolean>;
}

/** Where certificate logins find the registered keys (`UserCertificates`). */
export interface CertificateKeys {
  match(message: Uint8Array, proof: Uint8Array): Promise<CertificateMatch | null>;
}

const EXCHANGE_TTL_MS = 60_000;
const LEGACY_NONCE_TTL_MS = 30_000;
/** sysadm: "a two-step process with only a 30 seconds window of validity". */
const CERTIFICATE_CHALLENGE_TTL_MS = 30_000;
const TEST_STRING_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

export interface LoginLimits {
  /** Failures per (account, address) before waiting is required. */
  perAccountAddress: number;
  /** Failures per address, whatever the account. */
  perAddress: number;
  /** Failures per account from all addresses in `accountWindowSeconds`. */
  perAccount: number;
  accountWindowSeconds: number;
  /** Unfinished SCRAM exchanges (and wsauth nonces, and certificate test strings) one address may hold, and all of them. */
  pendingPerAddress: number;
  pendingTotal: number;
  verify: VerifyQueueLimits;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  perAccountAddress: 5,
  perAddress: 20,
  perAccount: 50,
  accountWindowSeconds: 900,
  pendingPerAddress: 32,
  pendingTotal: 10_000,
  // A lane as deep as the per-address limit: the throttles, not the queue, bound one address's
  // guesses; the queue's turns bound how long another address waits (one verification per busy lane).
  verify: { concurrency: 2, maxLanes: 32, perLane: 20 },
};

/** One login attempt, counted as a failure from its start until it succeeds. */
interface Attempt {
  succeeded(): void;
  /** The attempt was refused before any check (the server was busy): it counts for nothing. */
  cancelled(): void;
}

/**
 * Unfinished exchanges held in memory by key (the `rpc/auth_ssl` test strings, which belong to one
 * connection; SCRAM exchanges and wsauth nonces are in the database, see ExchangeStore). Each
 * address may hold only so many: past that its own oldest goes, so that no address can push out
 * another's exchange; when all are taken, new ones are refused until some finish or expire.
 */
export class PendingTable<T extends { address: string | null; expiresAt: number; username: string }> {
  private readonly entries = new Map<string, T>();
  /** Per address, its keys in the order they were added. */
  private readonly byAddress = new Map<string, Set<string>>();

  constructor(
    private readonly clock: Clock,
    private readonly perAddress: number,
    private readonly total: number,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  add(key: string, entry: T): void {
    const addressKey = entry.address ?? "";
    const mine = this.byAddress.get(addressKey);
    if (mine && mine.size >= this.perAddress) this.delete(mine.values().next().value!);
    if (this.entries.size >= this.total) this.expire();
    if (this.entries.size >= this.total) {
      throw new AppError("unavailable", "too many logins are in progress; retry in a few seconds", { retryAfter: 5 });
    }
    this.entries.set(key, entry);
    let set = this.byAddress.get(addressKey);
    if (!set) this.byAddress.set(addressKey, (set = new Set()));
    set.add(key);
  }

  /** The entry, removed: every exchange is single use. Expired entries are not returned. */
  take(key: string): T | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.delete(key);
    return entry.expiresAt > this.clock() ? entry : undefined;
  }

  forgetUser(username: string): void {
    for (const [key, entry] of this.entries) if (entry.username === username) this.delete(key);
  }

  private delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const addressKey = entry.address ?? "";
    const set = this.byAddress.get(addressKey);
    set?.delete(key);
    if (set?.size === 0) this.byAddress.delete(addressKey);
  }

  private expire(): void {
    const now = this.clock();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.delete(key);
  }
}

/**
 * Every way to log in: password, SCRAM-SHA-256, the opt-in wsauth nonce challenge, and tokens.
 * Failed attempts are throttled per (account, address), per address, and per account with a
 * much higher limit, each attempt counting from its start; password hashing waits its turn in a
 * bounded queue; every attempt is audited. A change of an account's credentials voids its logins
 * in flight.
 */
export class Authenticator {
  private readonly byAccountAddress: Throttle;
  private readonly byAddress: Throttle;
  private readonly byAccount: WindowThrottle;
  /** Each limiter's name in the shared store. */
  private readonly limiterNames: Map<Limiter, string>;
  private readonly verifications: VerifyQueue;
  /** Unfinished sign-in exchanges one address may hold, and all of them (per kind). */
  private readonly pendingLimits: { perAddress: number; total: number };
  /** Outstanding `auth_ssl` test strings, by the connection they were given to. */
  private readonly certificateChallenges: PendingTable<CertificateChallenge>;

  constructor(
    private readonly accounts: Accounts,
    private readonly sessions: Sessions,
    private readonly audit: Audit,
    private readonly metrics: Metrics,
    private readonly stats: Stats,
    events: EventHub,
    private readonly clock: Clock,
    /** Server secret that derives decoy salts for unknown users. */
    private readonly secret: Uint8Array,
    private readonly options: {
      legacyChallengeLogin: boolean;
      limits?: LoginLimits | undefined;
      certificateKeys: CertificateKeys;
      /** Where the limiters' buckets are shared with the other processes and nodes on the database. */
      shared: { sql: Sql; store: ThrottleStore; exchanges: ExchangeStore };
      /** A shared count that could not be given back (the database failed meanwhile). */
      onError?: (error: unknown) => void;
    },
  ) {
    const limits = options.limits ?? DEFAULT_LOGIN_LIMITS;
    this.byAccountAddress = new Throttle(clock, { freeFailures: limits.perAccountAddress, maxWaitSeconds: 900, forgetAfterSeconds: 3600 });
    this.byAddress = new Throttle(clock, { freeFailures: limits.perAddress, maxWaitSeconds: 900, forgetAfterSeconds: 3600 });
    this.byAccount = new WindowThrottle(clock, { maxFailures: limits.perAccount, windowSeconds: limits.accountWindowSeconds });
    this.limiterNames = new Map<Limiter, string>([
      [this.byAccountAddress, "login.account_address"],
      [this.byAddress, "login.address"],
      [this.byAccount, "login.account"],
    ]);
    this.verifications = new VerifyQueue(limits.verify);
    this.pendingLimits = { perAddress: limits.pendingPerAddress, total: limits.pendingTotal };
    this.certificateChallenges = new PendingTable(clock, limits.pendingPerAddress, limits.pendingTotal);
    // A credential change ends the account's unfinished exchanges, on every node; the credential
    // version checked at the last step and when the session is created covers changes made by
    // another process meanwhile.
    events.on("credentials.changed", ({ username }) => {
      void options.shared.exchanges.forgetUser(username).catch((error: unknown) => options.onError?.(error));
    });
    metrics.gauge("latchkey_login_verifications_pending", () => this.verifications.size);
  }

  /**
   * The limiters an attempt on this account from this address counts against, with their keys.
   * Without an account (a certificate login before a key names one) only the address's.
   */
  private limitersFor(username: string | null, address: string | null): [Limiter, string, "account" | "address"][] {
    const list: [Limiter, string, "account" | "address"][] =
      username === null
        ? []
        : [
            [this.byAccountAddress, `${username}\n${address ?? ""}`, "account"],
            [this.byAccount, username, "account"],
          ];
    if (address !== null) list.push([this.byAddress, address, "address"]);
    return list;
  }

  /** How long the longest-waiting of these limiters still makes the attempt wait, or null. */
  private throttledBy(limiters: [Limiter, string, "account" | "address"][]): { wait: number; what: "account" | "address" } | null {
    let wait = 0;
    let what: "account" | "address" = "account";
    for (const [limiter, key, kind] of limiters) {
      const w = limiter.waitSeconds(key);
      if (w > wait) [wait, what] = [w, kind];
    }
    return wait > 0 ? { wait, what } : null;
  }

  /** The refusal (429) of a throttled attempt, audited. */
  private async refuseThrottled(
    username: string | null,
    address: string | null,
    method: string,
    { wait, what }: { wait: number; what: "account" | "address" },
  ): Promise<AppError> {
    await this.audit.record({
      actor: username,
      address,
      action: `auth.${method}`,
      target: username,
      outcome: "denied",
      reason: `throttled (${what})`,
    });
    this.authFailed("throttled");
    return throttled(wait, what);
  }

  /**
   * Runs `fn` over these limiters' buckets as the database holds them: each is read (and locked)
   * into its limiter, `fn` decides and counts, and what it changed is written back, in one
   * transaction. So the limits hold across every process and node on the database, and of
   * attempts at once each sees those before it. `fn` is synchronous: nothing comes between the
   * check and the count.
   */
  private shared<T>(limiters: [Limiter, string, unknown][], fn: () => T): Promise<T> {
    const { sql, store } = this.options.shared;
    // Always in the same order, so that two attempts on the same buckets never wait for each other.
    const ordered = [...limiters].sort(([a, ka], [b, kb]) => {
      const [na, nb] = [this.limiterNames.get(a)!, this.limiterNames.get(b)!];
      return na < nb ? -1 : na > nb ? 1 : ka < kb ? -1 : ka > kb ? 1 : 0;
    });
    return sql.transaction(
      async () => {
        const now = this.clock();
        for (const [limiter, key] of ordered) limiter.importState(key, await store.hold(this.limiterNames.get(limiter)!, key, now));
        const result = fn();
        for (const [limiter, key] of ordered) await store.save(this.limiterNames.get(limiter)!, key, limiter.exportState(key), now);
        return result;
      },
      // A throttle's counts may be lost in a power cut; a login need not wait for the disk.
      { durable: false },
    );
  }

  /** Gives counts back in the shared store, in the background (a failure is reported, not thrown). */
  private giveBack(limiters: [Limiter, string, unknown][], change: (limiter: Limiter, key: string) => void): void {
    void this.shared(limiters, () => {
      for (const [limiter, key] of limiters) change(limiter, key);
    }).catch((error: unknown) => this.options.onError?.(error));
  }

  /** Refuses (429) when the account or address must wait, without counting an attempt. */
  private async checkThrottle(
    username: string | null,
    address: string | null,
    method: string,
    limiters = this.limitersFor(username, address),
  ): Promise<void> {
    // Read, not held: nothing is counted, so there is nothing to decide against another attempt.
    const now = this.clock();
    for (const [limiter, key] of limiters)
      limiter.importState(key, await this.options.shared.store.peek(this.limiterNames.get(limiter)!, key, now));
    const refusal = this.throttledBy(limiters);
    if (refusal) throw await this.refuseThrottled(username, address, method, refusal);
  }

  /**
   * Starts an attempt: refused when throttled, otherwise counted as a failure at once, so that
   * attempts in flight together are held to the limits as if each had already failed. The check
   * and the count run without a pause between them: no other attempt can pass the check between.
   */
  private async begin(username: string | null, address: string | null, method: string): Promise<Attempt> {
    const limiters = this.limitersFor(username, address);
    const refusal = await this.shared(limiters, () => {
      const throttledNow = this.throttledBy(limiters);
      if (!throttledNow) for (const [limiter, key] of limiters) limiter.count(key);
      return throttledNow;
    });
    if (refusal) throw await this.refuseThrottled(username, address, method, refusal);
    return {
      succeeded: () =>
        this.giveBack(limiters, (limiter, key) => {
          // The account's owner proved the password: their own typos from this address are forgiven.
          if (limiter === this.byAccountAddress) limiter.reset(key);
          else limiter.uncount(key);
        }),
      cancelled: () => this.giveBack(limiters, (limiter, key) => limiter.uncount(key)),
    };
  }

  /** Forgets shared throttle buckets and sign-in exchanges past their time (the server's minute sweep). */
  async sweepShared(): Promise<number> {
    const now = this.clock();
    return (await this.options.shared.store.sweep(now)) + (await this.options.shared.exchanges.sweep(now));
  }

  /** Records a sign-in's first step for its last, which any node may answer; refused (503) when too many are unfinished. */
  private async addExchange(kind: ExchangeKind, id: string, username: string, address: string | null, ttlMs: number, state: unknown) {
    const now = this.clock();
    const added = await this.options.shared.exchanges.add(
      kind,
      id,
      { username, address, state: JSON.stringify(state) },
      now + ttlMs,
      now,
      this.pendingLimits,
    );
    if (!added) throw new AppError("unavailable", "too many logins are in progress; retry in a few seconds", { retryAfter: 5 });
  }

  /** A sign-in's first step, taken for its last (single use); null when unknown, used or expired. */
  private async takeExchange<T>(kind: ExchangeKind, id: string): Promise<{ username: string; state: T } | null> {
    const pending = await this.options.shared.exchanges.take(kind, id, this.clock());
    return pending === null ? null : { username: pending.username, state: JSON.parse(pending.state) as T };
  }

  /** A refused sign-in, counted for /metrics (by reason) and for the charts (throttled or failed). */
  private authFailed(reason: string): void {
    this.metrics.authFailure(reason);
    this.stats.count(reason === "throttled" ? "logins_throttled" : "logins_failed");
  }

  private async failed(username: string, address: string | null, method: string, reason: string): Promise<AppError> {
    await this.audit.record({ actor: username, address, action: `auth.${method}`, target: username, outcome: "failure", reason });
    this.authFailed(reason);
    return unauthorized("invalid username or password");
  }

  /**
   * Creates the session, provided the account is still as it was when its credentials were
   * checked (`user` is that snapshot); otherwise the attempt fails like a wrong password.
   */
  private async succeeded(attempt: Attempt, user: UserRow, address: string | null, method: string): Promise<Login> {
    const session = await cancelOnError(attempt, this.sessions.issue(user, method, address));
    if (!session) throw await this.failed(user.username, address, method, "credentials changed during login");
    attempt.succeeded();
    await this.accounts.touchLogin(user.id);
    await this.audit.record({ actor: user.username, address, action: `auth.${method}`, target: user.username, outcome: "success" });
    this.metrics.login(method);
    return {
      token: session.token,
      sessionId: session.sessionId,
      role: user.role,
      username: user.username,
      expiresIn: session.expiresIn,
      principal: session.principal,
    };
  }

  async loginWithPassword(username: string, password: string, address: string | null): Promise<Login> {
    const attempt = await this.begin(username, address, "password");
    const user = await cancelOnError(attempt, this.accounts.get(username));
    let ok: boolean;
    try {
      ok = await this.verifications.run(address ?? "", () =>
        user
          ? verifyPassword(passwordInput(password, user.legacy_salt), user.password_hash)
          : burnDecoyVerification(password).then(() => false),
      );
    } catch (error) {
      // Refused for load before any hashing: not a guess, so it counts against no one.
      attempt.cancelled();
      throw error;
    }
    if (!user) throw await this.failed(username, address, "password", "unknown user");
    if (!ok) throw await this.failed(username, address, "password", "wrong password");
    return this.succeeded(attempt, user, address, "password");
  }

  /** SCRAM step 1: the server-first message, for known and unknown users alike. */
  async scramStart(clientFirstMessage: string, address: string | null): Promise<{ serverFirst: string; prehash: Prehash | null }> {
    const clientFirst = parseClientFirst(clientFirstMessage);
    await this.checkThrottle(clientFirst.username, address, "scram");
    const user = await this.accounts.get(clientFirst.username);
    const { salt, iterations } = user ? scramCredentialsOf(user) : decoyCredentials(this.secret, clientFirst.username);
    const combinedNonce = clientFirst.clientNonce + newServerNonce();
    const serverFirst = buildServerFirst(combinedNonce, salt, iterations);
    const exchange: ScramExchange = { clientFirst, serverFirst, credentialVersion: user?.credential_version ?? null };
    await this.addExchange("scram", combinedNonce, clientFirst.username, address, EXCHANGE_TTL_MS, exchange);
    return { serverFirst, prehash: user ? prehashFor(user) : this.decoyPrehash(clientFirst.username) };
  }

  /** SCRAM step 2: checks the proof; the exchange is single use whatever the outcome. */
  async scramFinish(clientFinalMessage: string, address: string | null): Promise<Login & { serverFinal: string }> {
    const clientFinal = parseClientFinal(clientFinalMessage);
    const taken = await this.takeExchange<ScramExchange>("scram", clientFinal.nonce);
    if (!taken) {
      // A replayed, stale or voided finish is still a login attempt: audit it.
      await this.audit.record({
        actor: null,
        address,
        action: "auth.scram",
        target: null,
        outcome: "failure",
        reason: "unknown or expired exchange",
      });
      this.authFailed("unknown exchange");
      throw unauthorized("unknown or expired SCRAM exchange; start again");
    }
    const { username, state: exchange } = taken;
    const attempt = await this.begin(username, address, "scram");
    // The account as it is now: the proof is checked against the credentials the exchange began with.
    const user = exchange.credentialVersion === null ? null : await cancelOnError(attempt, this.accounts.get(username));
    if (!user) throw await this.failed(username, address, "scram", "unknown user");
    if (user.credential_version !== exchange.credentialVersion)
      throw await this.failed(username, address, "scram", "credentials changed during login");
    const serverFinal = verifyClientFinal({
      clientFirst: exchange.clientFirst,
      serverFirst: exchange.serverFirst,
      clientFinal,
      combinedNonce: clientFinal.nonce,
      credentials: scramCredentialsOf(user),
    });
    if (serverFinal === null) throw await this.failed(username, address, "scram", "wrong proof");
    return { ...(await this.succeeded(attempt, user, address, "scram")), serverFinal };
  }

  /** wsauth challenge: a single-use nonce and the account's legacy salt. */
  async legacyChallenge(username: string, address: string | null): Promise<{ nonce: string; salt: string }> {
    this.requireLegacy();
    const user = await this.accounts.get(username);
    const nonce = randomHex(16);
    const pending: LegacyNonce = { credentialVersion: user?.credential_version ?? null };
    await this.addExchange("legacy", nonce, username, address, LEGACY_NONCE_TTL_MS, pending);
    const salt = user?.legacy_salt ?? this.decoySalt(username);
    return { nonce, salt };
  }

  /** wsauth login: response = SHA256(H + nonce) where H is the stored legacy hash. */
  async loginWithLegacyResponse(username: string, nonce: string, response: string, address: string | null): Promise<Login> {
    this.requireLegacy();
    const attempt = await this.begin(username, address, "legacy");
    const taken = await cancelOnError(attempt, this.takeExchange<LegacyNonce>("legacy", nonce));
    if (!taken || taken.username !== username) {
      throw await this.failed(username, address, "legacy", "unknown or expired nonce");
    }
    const pending = taken.state;
    const user = await cancelOnError(attempt, this.accounts.get(username));
    if (!user || user.legacy_hash === null) throw await this.failed(username, address, "legacy", user ? "no legacy hash" : "unknown user");
    // A nonce given before a change of the account's credentials ended with that change.
    if (user.credential_version !== pending.credentialVersion)
      throw await this.failed(username, address, "legacy", "credentials changed during login");
    if (!sameSecret(response.toLowerCase(), sha256Hex(user.legacy_hash + nonce))) {
      throw await this.failed(username, address, "legacy", "wrong response");
    }
    return this.succeeded(attempt, user, address, "legacy");
  }

  /**
   * `rpc/auth_ssl` stage 1: a random test string for one connection (`binding`), valid 30 s and
   * single use. A connection holds one at a time (asking again replaces it); an address holds at
   * most as many as it may hold SCRAM exchanges.
   */
  async certificateChallenge(binding: string, address: string | null): Promise<string> {
    await this.checkThrottle(null, address, "certificate");
    this.certificateChallenges.take(binding);
    const testString = randomFromAlphabet(TEST_STRING_ALPHABET, 32);
    this.certificateChallenges.add(binding, { username: "", testString, expiresAt: this.clock() + CERTIFICATE_CHALLENGE_TTL_MS, address });
    return testString;
  }

  /**
   * `rpc/auth_ssl` stage 2: a proof over the connection's outstanding test string, which is
   * consumed whatever the outcome. The proof carries no username: the registered key that made it
   * names the account. Until a key does, the attempt counts against the address (a proof that no
   * key made is a guess, like a wrong password); once one does, the account's throttles apply too,
   * and a certificate that has expired or was revoked fails against the account as well.
   */
  async loginWithCertificate(binding: string, proof: Uint8Array, address: string | null): Promise<Login> {
    const challenge = this.certificateChallenges.take(binding);
    const attempt = await this.begin(null, address, "certificate");
    if (!challenge)
      throw await this.certificateFailed(null, address, "unknown test string", "no test string outstanding on this connection");
    let match: CertificateMatch | null;
    try {
      match = await this.options.certificateKeys.match(new TextEncoder().encode(challenge.testString), proof);
    } catch (error) {
      attempt.cancelled();
      throw error;
    }
    if (!match) throw await this.certificateFailed(null, address, "no matching key", "the proof matches no registered key");
    const username = match.user.username;
    const accountLimiters = this.limitersFor(username, address).filter(([, , kind]) => kind === "account");
    // Counted against the account from here (unless it must wait), as the address's count was from the start.
    const throttledAccount = await this.shared(accountLimiters, () => {
      const throttledNow = this.throttledBy(accountLimiters);
      if (!throttledNow) for (const [limiter, key] of accountLimiters) limiter.count(key);
      return throttledNow;
    });
    if (throttledAccount) {
      // The proof held, so it was no guess at the address's expense; the account must still wait.
      attempt.cancelled();
      throw await this.refuseThrottled(username, address, "certificate", throttledAccount);
    }
    const stillRegistered =
      match.refusal === null
        ? await cancelOnError(attempt, match.stillRegistered(), () =>
            this.giveBack(accountLimiters, (limiter, key) => limiter.uncount(key)),
          )
        : true;
    const refusal = match.refusal ?? (stillRegistered ? null : "certificate revoked during login");
    if (refusal !== null)
      throw await this.certificateFailed(username, address, "certificate refused", `${match.kind} proof, but ${refusal}`);
    this.giveBack(accountLimiters, (limiter, key) => limiter.uncount(key));
    return this.succeeded(attempt, match.user, address, "certificate");
  }

  private async certificateFailed(username: string | null, address: string | null, metric: string, reason: string): Promise<AppError> {
    await this.audit.record({ actor: username, address, action: "auth.certificate", target: username, outcome: "failure", reason });
    this.authFailed(metric);
    return unauthorized();
  }

  /** Token login (`rpc/auth_token`): the session continues, its idle timer reset. */
  async loginWithToken(token: string, address: string | null): Promise<Principal> {
    const principal = await this.sessions.authenticate(token);
    if (!principal) {
      await this.audit.record({ actor: null, address, action: "auth.token", outcome: "failure", reason: "unknown or expired token" });
      this.authFailed("bad token");
      throw unauthorized();
    }
    return principal;
  }

  async logout(principal: Principal, address: string | null): Promise<void> {
    await this.sessions.revoke(principal.sessionId, "logout");
    await this.audit.record({ actor: principal.username, address, action: "auth.logout", target: principal.username, outcome: "success" });
  }

  private requireLegacy(): void {
    if (!this.options.legacyChallengeLogin) {
      throw notFound("the wsauth challenge login is off; start the server with --legacy-challenge-login to use it");
    }
  }

  private decoySalt(username: string): string {
    return createHmac("sha256", this.secret).update(`legacy-salt:${username}`).digest("hex").slice(0, 16);
  }

  /** Unknown users look imported about as often as not, so the prehash hint tells nothing. */
  private decoyPrehash(username: string): Prehash | null {
    const bit = createHmac("sha256", this.secret).update(`legacy-flag:${username}`).digest()[0]! & 1;
    return bit ? { algorithm: "sha256-hex(password+salt)", salt: this.decoySalt(username) } : null;
  }
}

/**
 * What `work` gives; when it throws instead (the database failed, not the caller's guess), the
 * attempt counts for nothing, and `undoAlso` gives back whatever else it counted.
 */
async function cancelOnError<T>(attempt: Attempt, work: Promise<T>, undoAlso: () => void = () => undefined): Promise<T> {
  try {
    return await work;
  } catch (error) {
    attempt.cancelled();
    undoAlso();
    throw error;
  }
}

/** An account's stored SCRAM credentials. */
function scramCredentialsOf(user: UserRow): ScramCredentials {
  return { salt: user.scram_salt, iterations: user.scram_iterations, storedKey: user.scram_stored_key, serverKey: user.scram_server_key };
}

function prehashFor(user: UserRow): Prehash | null {
  return user.legacy_salt === null ? null : { algorithm: "sha256-hex(password+salt)", salt: user.legacy_salt };
}
