import type { SettingsStore } from "../db/settings.ts";
import type { Sql } from "../db/sql.ts";
import type { Role, UserRow, UserStore } from "../db/users.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { AppError, badRequest, conflict, forbidden, notFound } from "./errors.ts";
import type { EventHub } from "./events.ts";
import { makeVerifiers, passwordInput, verifyPassword, type PasswordVerifiers } from "./passwords.ts";
import { randomFromAlphabet } from "./secrets.ts";
import type { Sessions } from "./sessions.ts";
import type { LegacyUser } from "./users-file.ts";

/** The bootstrap account: it always exists, is always an admin, and cannot be deleted. */
export const BOOTSTRAP_ADMIN = "admin";

/** The server stores here whether its last start took admin's password from the environment. */
const ADMIN_PASSWORD_FROM_ENV = "admin_password_from_env";

/** What callers may see of an account: never a verifier. */
export interface UserView {
  username: string;
  role: Role;
  allowed_groups: string[];
  created_at: string;
  last_login_at: string | null;
  password_changed_at: string;
  /** Imported from wsauth and still verified through its legacy hash. */
  legacy: boolean;
  /** Keeps the wsauth hash for --legacy-challenge-login. */
  legacy_challenge: boolean;
  /** The password is LATCHKEY_ADMIN_PASSWORD, applied at every start: it is changed there, not here. */
  password_from_env: boolean;
}

export function toUserView(row: UserRow, passwordFromEnv = false): UserView {
  return {
    username: row.username,
    role: row.role,
    allowed_groups: JSON.parse(row.allowed_groups) as string[],
    created_at: new Date(row.created_at).toISOString(),
    last_login_at: row.last_login_at === null ? null : new Date(row.last_login_at).toISOString(),
    password_changed_at: new Date(row.password_changed_at).toISOString(),
    legacy: row.legacy_salt !== null,
    legacy_challenge: row.legacy_hash !== null,
    password_from_env: passwordFromEnv && row.username === BOOTSTRAP_ADMIN,
  };
}

/** Who asked for a change, for the audit log. */
export interface Actor {
  name: string;
  address: string | null;
}

export class Accounts {
  constructor(
    private readonly sql: Sql,
    private readonly users: UserStore,
    private readonly sessions: Sessions,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly settings: SettingsStore,
    private readonly clock: Clock,
  ) {}

  private async toView(row: UserRow): Promise<UserView> {
    return toUserView(row, row.username === BOOTSTRAP_ADMIN && (await this.adminPasswordFromEnv()));
  }

  /** Whether admin's password comes from LATCHKEY_ADMIN_PASSWORD (as of the server's last start). */
  async adminPasswordFromEnv(): Promise<boolean> {
    return (await this.settings.get<boolean>(ADMIN_PASSWORD_FROM_ENV)) === true;
  }

  get(username: string): Promise<UserRow | null> {
    return this.users.get(username);
  }

  async require(username: string): Promise<UserRow> {
    const user = await this.users.get(username);
    if (!user) throw notFound(`no user named ${JSON.stringify(username)}`);
    return user;
  }

  async touchLogin(userId: number): Promise<void> {
    await this.users.touchLogin(userId, this.clock());
  }

  async view(username: string): Promise<UserView> {
    return this.toView(await this.require(username));
  }

  /** Role, groups and password in one call, as PATCH /api/users/{username} takes them. */
  async change(
    actor: Actor,
    username: string,
    changes: { role?: Role | undefined; allowedGroups?: string[] | undefined; password?: string | undefined },
  ): Promise<UserView> {
    await this.require(username);
    if (changes.password !== undefined) await this.refuseEnvManagedPassword(actor, username);
    if (changes.role !== undefined || changes.allowedGroups !== undefined) {
      const fields: { role?: Role; allowedGroups?: string[] } = {};
      if (changes.role !== undefined) fields.role = changes.role;
      if (changes.allowedGroups !== undefined) fields.allowedGroups = changes.allowedGroups;
      await this.update(actor, username, fields);
    }
    if (changes.password !== undefined) await this.changePassword(actor, username, changes.password);
    return this.view(username);
  }

  async list(limit: number, offset: number): Promise<{ items: UserView[]; total: number }> {
    const [rows, total] = await Promise.all([this.users.list(limit, offset), this.users.count()]);
    const fromEnv = rows.some((row) => row.username === BOOTSTRAP_ADMIN) && (await this.adminPasswordFromEnv());
    return { items: rows.map((row) => toUserView(row, fromEnv)), total };
  }

  async create(actor: Actor, input: { username: string; password: string; role: Role; allowedGroups: string[] }): Promise<UserView> {
    const twin = await this.users.getIgnoringCase(input.username);
    if (twin) {
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.create",
        target: input.username,
        outcome: "failure",
        reason: "exists",
      });
      throw conflict(
        `a user named ${JSON.stringify(twin.username)} already exists` +
          `${twin.username === input.username ? "" : " (names differ only in case)"}`,
        "username",
      );
    }
    const verifiers = await makeVerifiers(input.password);
    const created = await this.insert(input.username, input.role, input.allowedGroups, verifiers, null, null);
    if (!created) {
      throw conflict(`a user named ${JSON.stringify(input.username)} already exists`, "username");
    }
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "user.create",
      target: input.username,
      outcome: "success",
      reason: `role ${input.role}`,
    });
    return this.toView(await this.require(input.username));
  }

  private insert(
    username: string,
    role: Role,
    allowedGroups: string[],
    verifiers: PasswordVerifiers,
    legacySalt: string | null,
    legacyHash: string | null,
  ): Promise<boolean> {
    return this.users.insert({
      username,
      role,
      allowedGroups,
      passwordHash: verifiers.passwordHash,
      scram: verifiers.scram,
      legacySalt,
      legacyHash,
      now: this.clock(),
    });
  }

  /**
   * A new role ends the user's sessions and voids their logins in flight (it is part of what a
   * login was granted on); new groups apply to their next request.
   */
  async update(actor: Actor, username: string, changes: { role?: Role; allowedGroups?: string[] }): Promise<UserView> {
    const before = await this.require(username);
    if (username === BOOTSTRAP_ADMIN && changes.role !== undefined && changes.role !== "admin") {
      // A refused attempt on the bootstrap account is audited, as a refused delete is.
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.update",
        target: username,
        outcome: "denied",
        reason: "bootstrap admin",
      });
      throw forbidden(`the bootstrap account ${BOOTSTRAP_ADMIN} stays an admin`);
    }
    const roleChanged = changes.role !== undefined && changes.role !== before.role;
    const parts: string[] = [];
    if (changes.role !== undefined) parts.push(`role ${changes.role}`);
    if (changes.allowedGroups !== undefined) parts.push(`groups [${changes.allowedGroups.join(", ")}]`);
    await this.sql.transaction(async () => {
      if (!(await this.users.update(username, changes))) throw notFound(`no user named ${JSON.stringify(username)}`);
      if (roleChanged) await this.sessions.revokeUser(before.id, "role changed");
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.update",
        target: username,
        outcome: "success",
        reason: parts.join("; ") || null,
      });
    });
    // Committed: the user's sessions are read afresh (with their new groups), or are gone.
    this.sessions.forgetUser(before.id);
    if (roleChanged) this.events.emit("credentials.changed", { username });
    return this.toView(await this.require(username));
  }

  async delete(actor: Actor, username: string): Promise<void> {
    if (username === BOOTSTRAP_ADMIN) {
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.delete",
        target: username,
        outcome: "denied",
        reason: "bootstrap admin",
      });
      throw forbidden(`the bootstrap account ${BOOTSTRAP_ADMIN} cannot be deleted`);
    }
    const user = await this.require(username);
    // Sessions and account go in one transaction, so that no request or login slips in between:
    // logins in flight are voided first, which also makes those of other nodes wait for the outcome.
    await this.sql.transaction(async () => {
      await this.users.voidLogins(user.id);
      await this.sessions.revokeUser(user.id, "user deleted");
      if (!(await this.users.delete(username))) throw notFound(`no user named ${JSON.stringify(username)}`);
      await this.audit.record({ actor: actor.name, address: actor.address, action: "user.delete", target: username, outcome: "success" });
    });
    this.sessions.forgetUser(user.id);
    this.events.emit("credentials.changed", { username });
  }

  async changePassword(actor: Actor, username: string, password: string): Promise<void> {
    await this.require(username);
    await this.refuseEnvManagedPassword(actor, username);
    await this.setPassword(actor, username, password, null);
  }

  /** Stores new verifiers, ends every session and voids every login in flight, in one commit. */
  private async setPassword(actor: Actor, username: string, password: string, reason: string | null): Promise<void> {
    // Hashed before the transaction: while one is open, other callers wait (SQLite).
    const verifiers = await makeVerifiers(password);
    const userId = await this.sql.transaction(async () => {
      const user = await this.users.get(username);
      if (!user || !(await this.users.setPassword(username, verifiers.passwordHash, verifiers.scram, this.clock()))) {
        throw notFound(`no user named ${JSON.stringify(username)}`);
      }
      await this.sessions.revokeUser(user.id, "password changed");
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.passwd",
        target: username,
        outcome: "success",
        reason,
      });
      return user.id;
    });
    this.sessions.forgetUser(userId);
    this.events.emit("credentials.changed", { username });
  }

  private async refuseEnvManagedPassword(actor: Actor, username: string): Promise<void> {
    if (username !== BOOTSTRAP_ADMIN || !(await this.adminPasswordFromEnv())) return;
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "user.passwd",
      target: username,
      outcome: "denied",
      reason: "set by LATCHKEY_ADMIN_PASSWORD",
    });
    throw forbidden(
      `the password of ${BOOTSTRAP_ADMIN} is LATCHKEY_ADMIN_PASSWORD, applied at every start of the server: ` +
        "change that variable and restart",
    );
  }

  /**
   * At every start of the server: creates the bootstrap admin if it does not exist yet, and, when
   * LATCHKEY_ADMIN_PASSWORD is given, makes it admin's password (wsauth's model: the variable is
   * the password). Returns the generated password when none was given and the account is new,
   * so that the caller can print it once.
   */
  async bootstrap(givenPassword: string | undefined): Promise<{ created: boolean; changed: boolean; generatedPassword?: string }> {
    if (givenPassword !== undefined && (givenPassword.length < 8 || givenPassword.length > 1024)) {
      throw badRequest("LATCHKEY_ADMIN_PASSWORD must be 8 to 1024 characters; set a longer one or unset it to get a random password");
    }
    await this.settings.set(ADMIN_PASSWORD_FROM_ENV, givenPassword !== undefined);
    const system: Actor = { name: "system", address: null };
    const existing = await this.users.get(BOOTSTRAP_ADMIN);
    if (existing) {
      if (givenPassword === undefined) return { created: false, changed: false };
      if (await verifyPassword(passwordInput(givenPassword, existing.legacy_salt), existing.password_hash))
        return { created: false, changed: false };
      await this.setPassword(system, BOOTSTRAP_ADMIN, givenPassword, "LATCHKEY_ADMIN_PASSWORD changed");
      return { created: false, changed: true };
    }
    const generatedPassword = givenPassword === undefined ? randomPassword() : undefined;
    const verifiers = await makeVerifiers(givenPassword ?? generatedPassword!);
    const created = await this.insert(BOOTSTRAP_ADMIN, "admin", [], verifiers, null, null);
    if (!created) return { created: false, changed: false };
    await this.audit.record({ actor: system.name, address: null, action: "user.bootstrap", target: BOOTSTRAP_ADMIN, outcome: "success" });
    return generatedPassword === undefined ? { created, changed: false } : { created, changed: false, generatedPassword };
  }

  /**
   * Imports wsauth accounts in one transaction: the legacy hash becomes the password input of
   * the new verifiers; the hash itself is kept only when `keepLegacyHash` (for the opt-in
   * challenge login). An existing username is an error, or with `replace` takes the file's
   * credentials, role and groups (ending its sessions). Any conflict aborts the whole import.
   */
  async importLegacy(
    actor: Actor,
    users: LegacyUser[],
    keepLegacyHash: boolean,
    replace = false,
  ): Promise<{ created: number; replaced: number }> {
    const existing = new Map<string, UserRow>();
    for (const u of users) {
      const twin = await this.users.getIgnoringCase(u.username);
      if (!twin) continue;
      if (twin.username !== u.username) {
        throw conflict(
          `user ${JSON.stringify(u.username)} differs only in case from the existing ${JSON.stringify(twin.username)}; ` +
            "nothing was imported",
          "username",
        );
      }
      if (!replace)
        throw conflict(
          `user ${JSON.stringify(u.username)} already exists (use --replace to overwrite it); nothing was imported`,
          "username",
        );
      existing.set(u.username, twin);
    }
    const verifiers = await Promise.all(users.map((u) => makeVerifiers(u.password_hash)));
    const replacedIds: number[] = [];
    await this.sql.transaction(async () => {
      for (const [i, u] of users.entries()) {
        const legacyHash = keepLegacyHash ? u.password_hash : null;
        const twin = existing.get(u.username);
        if (twin) {
          const replaced = await this.users.replaceFromImport(twin.id, {
            role: u.role,
            allowedGroups: u.allowed_groups,
            passwordHash: verifiers[i]!.passwordHash,
            scram: verifiers[i]!.scram,
            legacySalt: u.salt,
            legacyHash,
            now: this.clock(),
          });
          if (!replaced) {
            throw new AppError("conflict", `user ${JSON.stringify(u.username)} changed during the import; nothing was imported`, {
              field: "username",
            });
          }
          await this.sessions.revokeUser(twin.id, "replaced by import");
          replacedIds.push(twin.id);
          continue;
        }
        const ok = await this.insert(u.username, u.role, u.allowed_groups, verifiers[i]!, u.salt, legacyHash);
        if (!ok)
          throw new AppError("conflict", `user ${JSON.stringify(u.username)} already exists; nothing was imported`, { field: "username" });
      }
      const reasons = [keepLegacyHash ? "legacy challenge kept" : null, existing.size > 0 ? `${existing.size} replaced` : null].filter(
        Boolean,
      );
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.import",
        target: `${users.length} users`,
        outcome: "success",
        reason: reasons.join("; ") || null,
      });
    });
    for (const id of replacedIds) this.sessions.forgetUser(id);
    for (const username of existing.keys()) this.events.emit("credentials.changed", { username });
    return { created: users.length - existing.size, replaced: existing.size };
  }

  /** Accounts that can be written back to a users.json: those that still hold their wsauth hash. */
  async exportLegacy(): Promise<LegacyUser[]> {
    return (await this.users.withLegacyHash()).map((row) => ({
      username: row.username,
      password_hash: row.legacy_hash!,
      salt: row.legacy_salt ?? "",
      role: row.role,
      allowed_groups: JSON.parse(row.allowed_groups) as string[],
    }));
  }
}

/** 18 characters without look-alikes (0 O 1 I l): about 105 bits, typed once from the console. */
function randomPassword(): string {
  return randomFromAlphabet("ABCDEFGHJKMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789", 18);
}
