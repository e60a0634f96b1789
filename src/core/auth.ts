import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { UserRow } from "../db/users.ts";
import type { Accounts } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { AppError, notFound, unauthorized } from "./errors.ts";
import type { Metrics } from "./metrics.ts";
import { burnDecoyVerification, passwordInput, verifyPassword } from "./passwords.ts";
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
import { throttled, Throttle } from "./throttle.ts";

export interface Login {
  token: string;
  role: UserRow["role"];
  username: string;
  expiresIn: number;
  sessionId: string;
}

/** How the server tells an imported account's client to prepare its password for SCRAM. */
export interface Prehash {
  algorithm: "sha256-hex(password+salt)";
  salt: string;
}

interface ScramExchange {
  username: string;
  clientFirst: ClientFirst;
  serverFirst: string;
  credentials: ScramCredentials | null;
  expiresAt: number;
  address: string | null;
}

interface LegacyNonce {
  username: string;
  expiresAt: number;
}

const EXCHANGE_TTL_MS = 60_000;
const LEGACY_NONCE_TTL_MS = 30_000;
const MAX_PENDING = 10_000;

/**
 * Every way to log in: password, SCRAM-SHA-256, the opt-in wsauth nonce challenge, and tokens.
 * Each attempt is throttled per account and per address, counted, and audited.
 */
export class Authenticator {
  private readonly byAccount: Throttle;
  private readonly byAddress: Throttle;
  private readonly exchanges = new Map<string, ScramExchange>();
  private readonly legacyNonces = new Map<string, LegacyNonce>();

  constructor(
    private readonly accounts: Accounts,
    private readonly sessions: Sessions,
    private readonly audit: Audit,
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    /** Server secret that derives decoy salts for unknown users. */
    private readonly secret: Uint8Array,
    private readonly options: { legacyChallengeLogin: boolean },
  ) {
    this.byAccount = new Throttle(clock, { freeFailures: 5, maxWaitSeconds: 900, forgetAfterSeconds: 3600 });
    this.byAddress = new Throttle(clock, { freeFailures: 20, maxWaitSeconds: 900, forgetAfterSeconds: 3600 });
  }

  get legacyChallengeEnabled(): boolean {
    return this.options.legacyChallengeLogin;
  }

  private checkThrottle(username: string, address: string | null, method: string): void {
    const accountWait = this.byAccount.waitSeconds(`user:${username}`);
    const addressWait = address === null ? 0 : this.byAddress.waitSeconds(`addr:${address}`);
    const wait = Math.max(accountWait, addressWait);
    if (wait > 0) {
      const what = accountWait >= addressWait ? "account" : "address";
      this.audit.record({ actor: username, address, action: `auth.${method}`, target: username, outcome: "denied", reason: `throttled (${what})` });
      this.metrics.authFailure("throttled");
      throw throttled(wait, what);
    }
  }

  private failed(username: string, address: string | null, method: string, reason: string): AppError {
    this.byAccount.fail(`user:${username}`);
    if (address !== null) this.byAddress.fail(`addr:${address}`);
    this.audit.record({ actor: username, address, action: `auth.${method}`, target: username, outcome: "failure", reason });
    this.metrics.authFailure(reason);
    return unauthorized("invalid username or password");
  }

  private succeeded(user: UserRow, address: string | null, method: string): Login {
    this.byAccount.reset(`user:${user.username}`);
    const session = this.sessions.issue(user, method, address);
    this.accounts.touchLogin(user.id);
    this.audit.record({ actor: user.username, address, action: `auth.${method}`, target: user.username, outcome: "success" });
    this.metrics.login(method);
    return { token: session.token, sessionId: session.sessionId, role: user.role, username: user.username, expiresIn: session.expiresIn };
  }

  async loginWithPassword(username: string, password: string, address: string | null): Promise<Login> {
    this.checkThrottle(username, address, "password");
    const user = this.accounts.get(username);
    if (!user) {
      await burnDecoyVerification(password);
      throw this.failed(username, address, "password", "unknown user");
    }
    const ok = await verifyPassword(passwordInput(password, user.legacy_salt), user.password_hash);
    if (!ok) throw this.failed(username, address, "password", "wrong password");
    return this.succeeded(user, address, "password");
  }

  /** SCRAM step 1: the server-first message, for known and unknown users alike. */
  scramStart(clientFirstMessage: string, address: string | null): { serverFirst: string; prehash: Prehash | null } {
    const clientFirst = parseClientFirst(clientFirstMessage);
    this.checkThrottle(clientFirst.username, address, "scram");
    this.expire();
    const user = this.accounts.get(clientFirst.username);
    const credentials: ScramCredentials | null = user
      ? { salt: user.scram_salt, iterations: user.scram_iterations, storedKey: user.scram_stored_key, serverKey: user.scram_server_key }
      : null;
    const { salt, iterations } = credentials ?? decoyCredentials(this.secret, clientFirst.username);
    const combinedNonce = clientFirst.clientNonce + newServerNonce();
    const serverFirst = buildServerFirst(combinedNonce, salt, iterations);
    if (this.exchanges.size >= MAX_PENDING) this.exchanges.delete(this.exchanges.keys().next().value!);
    this.exchanges.set(combinedNonce, {
      username: clientFirst.username,
      clientFirst,
      serverFirst,
      credentials,
      expiresAt: this.clock() + EXCHANGE_TTL_MS,
      address,
    });
    return { serverFirst, prehash: user ? prehashFor(user) : this.decoyPrehash(clientFirst.username) };
  }

  /** SCRAM step 2: checks the proof; the exchange is single use whatever the outcome. */
  scramFinish(clientFinalMessage: string, address: string | null): Login & { serverFinal: string } {
    const clientFinal = parseClientFinal(clientFinalMessage);
    const exchange = this.exchanges.get(clientFinal.nonce);
    this.exchanges.delete(clientFinal.nonce);
    if (!exchange || exchange.expiresAt <= this.clock()) {
      // A replayed or stale finish is still a login attempt: audit it (a replay no longer names its user).
      this.audit.record({ actor: exchange?.username ?? null, address, action: "auth.scram", target: exchange?.username ?? null, outcome: "failure", reason: "unknown or expired exchange" });
      this.metrics.authFailure("unknown exchange");
      throw unauthorized("unknown or expired SCRAM exchange; start again");
    }
    this.checkThrottle(exchange.username, address, "scram");
    const serverFinal = exchange.credentials
      ? verifyClientFinal({ clientFirst: exchange.clientFirst, serverFirst: exchange.serverFirst, clientFinal, combinedNonce: clientFinal.nonce, credentials: exchange.credentials })
      : null;
    const user = serverFinal === null ? null : this.accounts.get(exchange.username);
    if (serverFinal === null || !user) {
      throw this.failed(exchange.username, address, "scram", exchange.credentials ? "wrong proof" : "unknown user");
    }
    return { ...this.succeeded(user, address, "scram"), serverFinal };
  }

  /** wsauth challenge: a single-use nonce and the account's legacy salt. */
  legacyChallenge(username: string): { nonce: string; salt: string } {
    this.requireLegacy();
    this.expire();
    const user = this.accounts.get(username);
    const nonce = randomBytes(16).toString("hex");
    if (this.legacyNonces.size >= MAX_PENDING) this.legacyNonces.delete(this.legacyNonces.keys().next().value!);
    this.legacyNonces.set(nonce, { username, expiresAt: this.clock() + LEGACY_NONCE_TTL_MS });
    const salt = user?.legacy_salt ?? this.decoySalt(username);
    return { nonce, salt };
  }

  /** wsauth login: response = SHA256(H + nonce) where H is the stored legacy hash. */
  loginWithLegacyResponse(username: string, nonce: string, response: string, address: string | null): Login {
    this.requireLegacy();
    this.checkThrottle(username, address, "legacy");
    const pending = this.legacyNonces.get(nonce);
    this.legacyNonces.delete(nonce);
    if (!pending || pending.username !== username || pending.expiresAt <= this.clock()) {
      throw this.failed(username, address, "legacy", "unknown or expired nonce");
    }
    const user = this.accounts.get(username);
    if (!user || user.legacy_hash === null) throw this.failed(username, address, "legacy", user ? "no legacy hash" : "unknown user");
    const expected = createHash("sha256").update(user.legacy_hash + nonce).digest();
    const given = Buffer.from(/^[0-9a-f]{64}$/i.test(response) ? response.toLowerCase() : "", "hex");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw this.failed(username, address, "legacy", "wrong response");
    }
    return this.succeeded(user, address, "legacy");
  }

  /** Token login (`rpc/auth_token`): the session continues, its idle timer reset. */
  loginWithToken(token: string, address: string | null): Principal {
    const principal = this.sessions.authenticate(token);
    if (!principal) {
      this.audit.record({ actor: null, address, action: "auth.token", outcome: "failure", reason: "unknown or expired token" });
      this.metrics.authFailure("bad token");
      throw unauthorized();
    }
    return principal;
  }

  logout(principal: Principal, address: string | null): void {
    this.sessions.revoke(principal.sessionId, "logout");
    this.audit.record({ actor: principal.username, address, action: "auth.logout", target: principal.username, outcome: "success" });
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

  private expire(): void {
    const now = this.clock();
    for (const [k, e] of this.exchanges) if (e.expiresAt <= now) this.exchanges.delete(k);
    for (const [k, n] of this.legacyNonces) if (n.expiresAt <= now) this.legacyNonces.delete(k);
  }
}

function prehashFor(user: UserRow): Prehash | null {
  return user.legacy_salt === null ? null : { algorithm: "sha256-hex(password+salt)", salt: user.legacy_salt };
}
