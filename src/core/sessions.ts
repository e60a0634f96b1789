import { DataVersion } from "../db/data-version.ts";
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
 * Checked sessions are cached in memory: a lookup is then a Map read instead of a SQLite join.
 * The cache is dropped whenever another process (the admin CLI) has committed to the database
 * (SQLite's data_version), and entries are dropped here when this process changes a session or
 * its user, so a revocation still takes effect on the very next request.
 */
export class Sessions {
  private readonly cache = new Map<string, Cached>();
  /** Sessions this process's sweep removed because they had run out (not because they were ended). */
  private readonly swept = new Set<string>();
  private readonly otherWriters: DataVersion;
  /** How stale the stored last-use time may get before it is written back. */
  private readonly touchEveryMs: number;

  constructor(
    private readonly store: SessionStore,
    private readonly clock: Clock,
    private readonly events: EventHub,
    readonly limits: SessionLimits,
  ) {
    this.touchEveryMs = Math.min(5000, (limits.idleSeconds * 1000) / 10);
    this.otherWriters = new DataVersion(() => store.dataVersion());
  }

  /**
   * A new session for a user whose credentials were just verified, or null when they changed
   * (password, role) or the account was deleted since they were read: the login is then void.
   */
  issue(user: UserRow, method: string, address: string | null): { token: string; sessionId: string; expiresIn: number } | null {
    const token = randomToken(32);
    const sessionId = hashToken(token);
    const now = this.clock();
    const created = this.store.insertIfCurrent({
      id: sessionId,
      userId: user.id,
      credentialVersion: user.credential_version,
      method,
      address,
      now,
      expiresAt: now + this.limits.absoluteSeconds * 1000,
    });
    return created ? { token, sessionId, expiresIn: this.limits.idleSeconds } : null;
  }

  /** The principal for a token, sliding its idle timer; null when unknown or expired. */
  authenticate(token: string): Principal | null {
    if (token.length === 0 || token.length > 256) return null;
    return this.authenticateId(hashToken(token));
  }

  authenticateId(sessionId: string): Principal | null {
    const entry = this.lookup(sessionId);
    if (!entry) return null;
    const now = this.clock();
    if (!this.valid(entry, now)) {
      this.cache.delete(sessionId);
      this.store.delete(sessionId);
      this.swept.add(sessionId);
      return null;
    }
    entry.lastUse = Math.max(entry.lastUse, now);
    if (now - entry.storedLastUse >= this.touchEveryMs) {
      this.store.touch(sessionId, now);
      entry.storedLastUse = now;
    }
    return entry.principal;
  }

  /** Whether the session is still valid, without counting this as use (for server pushes). */
  isAlive(sessionId: string): boolean {
    const entry = this.lookup(sessionId);
    return entry !== null && this.valid(entry, this.clock());
  }

  /**
   * Whether the session ran out by itself (idle or absolute limit) as far as this process knows,
   * as opposed to having been ended: an unknown session did not run out.
   */
  ranOut(sessionId: string): boolean {
    if (this.swept.has(sessionId)) return true;
    const row = this.cache.get(sessionId) ?? this.stored(sessionId);
    return row !== null && !this.valid(row, this.clock());
  }

  /** The stored session, without caching it. */
  private stored(sessionId: string): Cached | null {
    const row = this.store.get(sessionId);
    return row ? toCached(row) : null;
  }

  /** Seconds the session stays valid without further use. */
  secondsValid(): number {
    return this.limits.idleSeconds;
  }

  revoke(sessionId: string, reason: string): boolean {
    this.cache.delete(sessionId);
    const existed = this.store.delete(sessionId);
    this.events.emit("sessions.revoked", { sessionIds: [sessionId], reason });
    return existed;
  }

  /** Ends every session of a user (deletion, password change); their WebSockets close. */
  revokeUser(userId: number, reason: string): void {
    const sessionIds = this.store.idsForUser(userId);
    this.store.deleteForUser(userId);
    this.forgetUser(userId);
    this.events.emit("sessions.revoked", { sessionIds, reason });
  }

  /** The user's role or groups changed: their sessions must be read afresh. */
  forgetUser(userId: number): void {
    for (const [id, entry] of this.cache) if (entry.principal.userId === userId) this.cache.delete(id);
  }

  /** The subset of `ids` that still exist in storage (another process may have removed some). */
  stillExisting(ids: string[]): Set<string> {
    return this.store.existing(ids);
  }

  sweep(): number {
    // The stored last use may lag the real one by up to touchEveryMs, so only remove sessions
    // idle for longer than that too; authenticateId() still enforces the exact limit.
    const now = this.clock();
    for (const [id, entry] of this.cache) if (!this.valid(entry, now)) this.cache.delete(id);
    const removed = this.store.deleteExpired(now, this.limits.idleSeconds * 1000 + this.touchEveryMs);
    if (this.swept.size + removed.length > MAX_CACHED) this.swept.clear();
    for (const id of removed) this.swept.add(id);
    return removed.length;
  }

  private valid(entry: Cached, now: number): boolean {
    return now < entry.expiresAt && now < entry.lastUse + this.limits.idleSeconds * 1000;
  }

  private lookup(sessionId: string): Cached | null {
    if (this.otherWriters.changed()) this.cache.clear();
    const cached = this.cache.get(sessionId);
    if (cached) return cached;
    const row = this.store.get(sessionId);
    if (!row) return null;
    const entry = toCached(row);
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
