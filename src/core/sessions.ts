import { createHash, randomBytes } from "node:crypto";
import type { SessionStore } from "../db/sessions.ts";
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

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * Opaque bearer tokens (256 random bits, base64url) stored only as their SHA-256. A session ends
 * after `idleSeconds` without a successful request (sliding) or `absoluteSeconds` after login,
 * whichever comes first.
 */
export class Sessions {
  /** Last use seen by this process, so that the idle clock slides without a write per request. */
  private readonly lastUse = new Map<string, number>();
  /** How stale the stored last-use time may get before it is written back. */
  private readonly touchEveryMs: number;

  constructor(
    private readonly store: SessionStore,
    private readonly clock: Clock,
    private readonly events: EventHub,
    readonly limits: SessionLimits,
  ) {
    this.touchEveryMs = Math.min(5000, (limits.idleSeconds * 1000) / 10);
  }

  issue(user: UserRow, method: string, address: string | null): { token: string; sessionId: string; expiresIn: number } {
    const token = randomBytes(32).toString("base64url");
    const sessionId = hashToken(token);
    const now = this.clock();
    this.store.insert({
      id: sessionId,
      userId: user.id,
      method,
      address,
      now,
      expiresAt: now + this.limits.absoluteSeconds * 1000,
    });
    return { token, sessionId, expiresIn: this.limits.idleSeconds };
  }

  /** The principal for a token, sliding its idle timer; null when unknown or expired. */
  authenticate(token: string): Principal | null {
    if (token.length === 0 || token.length > 256) return null;
    return this.authenticateId(hashToken(token));
  }

  authenticateId(sessionId: string): Principal | null {
    const row = this.store.get(sessionId);
    if (!row) {
      this.lastUse.delete(sessionId);
      return null;
    }
    const now = this.clock();
    const lastUsed = Math.max(row.last_used_at, this.lastUse.get(sessionId) ?? 0);
    if (now >= row.expires_at || now >= lastUsed + this.limits.idleSeconds * 1000) {
      this.store.delete(sessionId);
      this.lastUse.delete(sessionId);
      return null;
    }
    this.lastUse.set(sessionId, now);
    if (now - row.last_used_at >= this.touchEveryMs) this.store.touch(sessionId, now);
    return {
      sessionId,
      userId: row.user_id,
      username: row.username,
      role: row.role,
      groups: JSON.parse(row.allowed_groups) as string[],
    };
  }

  /** Whether the session is still valid, without counting this as use (for server pushes). */
  isAlive(sessionId: string): boolean {
    const row = this.store.get(sessionId);
    if (!row) return false;
    const now = this.clock();
    const lastUsed = Math.max(row.last_used_at, this.lastUse.get(sessionId) ?? 0);
    return now < row.expires_at && now < lastUsed + this.limits.idleSeconds * 1000;
  }

  /** Seconds the session stays valid without further use. */
  secondsValid(): number {
    return this.limits.idleSeconds;
  }

  revoke(sessionId: string, reason: string): boolean {
    this.lastUse.delete(sessionId);
    const existed = this.store.delete(sessionId);
    this.events.emit("sessions.revoked", { sessionIds: [sessionId], reason });
    return existed;
  }

  /** Ends every session of a user (deletion, password change); their WebSockets close. */
  revokeUser(userId: number, reason: string): void {
    const sessionIds = this.store.idsForUser(userId);
    this.store.deleteForUser(userId);
    for (const id of sessionIds) this.lastUse.delete(id);
    this.events.emit("sessions.revoked", { sessionIds, reason });
  }

  /** The subset of `ids` that still exist in storage (another process may have removed some). */
  stillExisting(ids: string[]): Set<string> {
    return this.store.existing(ids);
  }

  sweep(): number {
    // The stored last use may lag the real one by up to touchEveryMs, so only remove sessions
    // idle for longer than that too; authenticateId() still enforces the exact limit.
    return this.store.deleteExpired(this.clock(), this.limits.idleSeconds * 1000 + this.touchEveryMs);
  }
}
