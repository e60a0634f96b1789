import { randomToken, sha256Hex } from "./secrets.ts";
import type { SessionRow, SessionStore } from "../db/sessions.ts";
import type { Role, UserRow } from "../db/users.ts";
import type { Clock } from "./clock.ts";
import type { EventHub } from "./events.ts";

/** Who is calling, once a token or cookie has been checked. */
export interface Principal {
  sessionId: string;
  userId: number;
  username: string;
  role: Role;
  /** Client groups a viewer may see; admins see all. */
  groups: string[];
}

export interface SessionLimits {
  idleSeconds: number;
  absoluteSeconds: number;
}

export interface SessionOptions {
  /**
   * True when someone else (another process on the SQLite file, another node on the PostgreSQL
   * database) has written since the last time it said so. Called on every lookup: it must be cheap.
   */
  otherWriters: () => boolean;
  /** Where a failed write-back of a session's last use goes (the next use of the session retries it). */
  onError: (error: unknown) => void;
}

/** A session's id: the SHA-256 of its token, which is all that is stored. */
export function hashToken(token: string): string {
  return sha256Hex(token);
}

interface Cached {
  principal: Principal;
  expiresAt: number;
  /** The last use as stored; written back when the real one has moved far enough ahead. */
  storedLastUse: number;
  /** The last use seen by this process. */
  lastUse: number;
}

const MAX_CACHED = 100_000;

/**
 * Opaque bearer tokens (256 random bits, base64url) stored only as their SHA-256. A session ends
 * after `idleSeconds` without a successful request (sliding) or `absoluteSeconds` after login,
 * whichever comes first.
 *
 * Checked sessions are cached in memory: a lookup that finds its session there is a Map read, with
 * no database work. The cache is dropped whenever someone else has written to the database
 * (`otherWriters`: the admin CLI, another node), and entries are dropped here when this process
 * changes a session or its user, so a revocation still takes effect on the very next request.
 * A lookup whose database read overlapped such a change does not cache what it read.
 */
export class Sessions {
  private readonly cache = new Map<string, Cached>();
  /** Bumped by every invalidation: a read begun before one must not be cached after it. */
  private generation = 0;
  /** Sessions this process's sweep removed because they had run out (not because they were ended). */
  private readonly swept = new Set<string>();
  /** How stale the stored last-use time may get before it is written back. */
  private readonly touchEveryMs: number;

  constructor(
    private readonly store: SessionStore,
    private readonly clock: Clock,
    private readonly events: EventHub,
    readonly limits: SessionLimits,
    private readonly options: SessionOptions,
  ) {
    this.touchEveryMs = Math.min(5000, (limits.idleSeconds * 1000) / 10);
  }

  /**
   * A new session for a user whose credentials were just verified, or null when they changed
   * (password, role) or the account was deleted since they were read: the login is then void.
   * The principal is read back from storage, so that it holds the account as it is now (its
   * groups may have changed since `user` was read, without voiding the login).
   */
  async issue(
    user: UserRow,
    method: string,
    address: string | null,
  ): Promise<{ token: string; sessionId: string; expiresIn: number; principal: Principal } | null> {
    const token = randomToken(32);
    const sessionId = hashToken(token);
    const now = this.clock();
    const created = await this.store.insertIfCurrent({
      id: sessionId,
      userId: user.id,
      credentialVersion: user.credential_version,
      method,
      address,
      now,
      expiresAt: now + this.limits.absoluteSeconds * 1000,
    });
    if (!created) return null;
    const entry = await this.load(sessionId);
    if (!entry) return null;
    return { token, sessionId, expiresIn: this.limits.idleSeconds, principal: entry.principal };
  }

  /** The principal for a token, sliding its idle timer; null when unknown or expired. */
  async authenticate(token: string): Promise<Principal | null> {
    if (token.length === 0 || token.length > 256) return null;
    return this.authenticateId(hashToken(token));
  }

  /**
   * The principal for a session, sliding its idle timer; null when unknown or expired. A cached
   * session costs no database work: its last use is written back every `touchEveryMs` without
   * the request waiting for it.
   */
  async authenticateId(sessionId: string): Promise<Principal | null> {
    const entry = this.cached(sessionId) ?? (await this.load(sessionId));
    if (!entry) return null;
    const now = this.clock();
    if (!this.valid(entry, now)) {
      this.cache.delete(sessionId);
      await this.store.delete(sessionId);
      this.swept.add(sessionId);
      return null;
    }
    entry.lastUse = Math.max(entry.lastUse, now);
    if (now - entry.storedLastUse >= this.touchEveryMs) this.writeBack(sessionId, entry, now);
    return entry.principal;
  }

  private writeBack(sessionId: string, entry: Cached, now: number): void {
    const before = entry.storedLastUse;
    entry.storedLastUse = now;
    void this.store.touch(sessionId, now).catch((error: unknown) => {
      // Not written: the next use tries again.
      if (entry.storedLastUse === now) entry.storedLastUse = before;
      this.options.onError(error);
    });
  }

  /** Whether the session is still valid, without counting this as use (for server pushes). */
  async isAlive(sessionId: string): Promise<boolean> {
    const entry = this.cached(sessionId) ?? (await this.load(sessionId));
    return entry !== null && this.valid(entry, this.clock());
  }

  /**
   * Whether the session ran out by itself (idle or absolute limit) as far as this process knows,
   * as opposed to having been ended: an unknown session did not run out.
   */
  async ranOut(sessionId: string): Promise<boolean> {
    if (this.swept.has(sessionId)) return true;
    const row = this.cache.get(sessionId) ?? (await this.stored(sessionId));
    return row !== null && !this.valid(row, this.clock());
  }

  /** The stored session, without caching it. */
  private async stored(sessionId: string): Promise<Cached | null> {
    const row = await this.store.get(sessionId);
    return row ? toCached(row) : null;
  }

  /** Seconds the session stays valid without further use. */
  secondsValid(): number {
    return this.limits.idleSeconds;
  }

  async revoke(sessionId: string, reason: string): Promise<boolean> {
    this.forget(sessionId);
    const existed = await this.store.delete(sessionId);
    // Again once deleted: a lookup that read the row meanwhile must not keep it.
    this.forget(sessionId);
    this.events.emit("sessions.revoked", { sessionIds: [sessionId], reason });
    return existed;
  }

  /**
   * Ends every session of a user (deletion, password change); their WebSockets close. Inside a
   * transaction, the caller calls `forgetUser` again once it has committed: until then, another
   * connection (PostgreSQL) may still read the sessions and cache them.
   */
  async revokeUser(userId: number, reason: string): Promise<void> {
    this.forgetUser(userId);
    const sessionIds = await this.store.deleteForUser(userId);
    this.forgetUser(userId);
    this.events.emit("sessions.revoked", { sessionIds, reason });
  }

  /**
   * The user's sessions must be read afresh (their role or groups changed, or they ended). Call it
   * once the change is committed.
   */
  forgetUser(userId: number): void {
    this.generation++;
    for (const [id, entry] of this.cache) if (entry.principal.userId === userId) this.cache.delete(id);
  }

  private forget(sessionId: string): void {
    this.generation++;
    this.cache.delete(sessionId);
  }

  /** The subset of `ids` that still exist in storage (another process may have removed some). */
  stillExisting(ids: string[]): Promise<Set<string>> {
    return this.store.existing(ids);
  }

  async sweep(): Promise<number> {
    // The stored last use may lag the real one by up to touchEveryMs, so only remove sessions
    // idle for longer than that too; authenticateId() still enforces the exact limit.
    const now = this.clock();
    for (const [id, entry] of this.cache) if (!this.valid(entry, now)) this.cache.delete(id);
    const removed = await this.store.deleteExpired(now, this.limits.idleSeconds * 1000 + this.touchEveryMs);
    if (this.swept.size + removed.length > MAX_CACHED) this.swept.clear();
    for (const id of removed) this.swept.add(id);
    return removed.length;
  }

  private valid(entry: Cached, now: number): boolean {
    return now < entry.expiresAt && now < entry.lastUse + this.limits.idleSeconds * 1000;
  }

  /** The cached session, if any; the whole cache goes first when someone else has written. */
  private cached(sessionId: string): Cached | null {
    if (this.options.otherWriters()) {
      this.generation++;
      this.cache.clear();
    }
    return this.cache.get(sessionId) ?? null;
  }

  /** The stored session, cached unless an invalidation happened while it was read. */
  private async load(sessionId: string): Promise<Cached | null> {
    const generation = this.generation;
    const row = await this.store.get(sessionId);
    if (!row) return null;
    const entry = toCached(row);
    if (generation !== this.generation) return entry;
    const racing = this.cache.get(sessionId);
    if (racing) return racing;
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    this.cache.set(sessionId, entry);
    return entry;
  }
}

function toCached(row: SessionRow): Cached {
  return {
    principal: {
      sessionId: row.id,
      userId: row.user_id,
      username: row.username,
      role: row.role,
      groups: JSON.parse(row.allowed_groups) as string[],
    },
    expiresAt: row.expires_at,
    storedLastUse: row.last_used_at,
    lastUse: row.last_used_at,
  };
}
