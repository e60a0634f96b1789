import type { Database } from "bun:sqlite";
import { immediate } from "../db/open.ts";
import type { SettingsStore } from "../db/settings.ts";
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
    private readonly db: Database,
    private readonly users: UserStore,
    private readonly sessions: Sessions,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly settings: SettingsStore,
    private readonly clock: Clock,
  ) {}

  private toView(row: UserRow): UserView {
    return toUserView(row, row.username === BOOTSTRAP_ADMIN && this.adminPasswordFromEnv());
  }

  /** Whether admin's password comes from LATCHKEY_ADMIN_PASSWORD (as of the server's last start). */
  adminPasswordFromEnv(): boolean {
    return this.settings.get<boolean>(ADMIN_PASSWORD_FROM_ENV) === true;
  }

  get(username: string): UserRow | null {
    return this.users.get(username);
  }

  require(username: string): UserRow {
    const user = this.users.get(username);
    if (!user) throw notFound(`no user named ${JSON.stringify(username)}`);
    return user;
  }

  touchLogin(userId: number): void {
    this.users.touchLogin(userId, this.clock());
  }

  view(username: string): UserView {
    return this.toView(this.require(username));
  }

  /** Role, groups and password in one call, as PATCH /api/users/{username} takes them. */
  async change(
    actor: Actor,
    username: string,
    changes: { role?: Role | undefined; allowedGroups?: string[] | undefined; password?: string | undefined },
  ): Promise<UserView> {
    this.require(username);
    if (changes.password !== undefined) this.refuseEnvManagedPassword(actor, username);
    if (changes.role !== undefined || changes.allowedGroups !== undefined) {
      const fields: { role?: Role; allowedGroups?: string[] } = {};
      if (changes.role !== undefined) fields.role = changes.role;
      if (changes.allowedGroups !== undefined) fields.allowedGroups = changes.allowedGroups;
      this.update(actor, username, fields);
    }
    if (changes.password !== undefined) await this.changePassword(actor, username, changes.password);
    return this.view(username);
  }

  list(limit: number, offset: number): { items: UserView[]; total: number } {
    return { items: this.users.list(limit, offset).map((row) => this.toView(row)), total: this.users.count() };
  }

  async create(actor: Actor, input: { username: string; password: string; role: Role; allowedGroups: string[] }): Promise<UserView> {
    const twin = this.users.getIgnoringCase(input.username);
    if (twin) {
      this.audit.record({
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
    const created = this.insert(input.username, input.role, input.allowedGroups, verifiers, null, null);
    if (!created) {
      throw conflict(`a user named ${JSON.stringify(input.username)} already exists`, "username");
    }
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "user.create",
      target: input.username,
      outcome: "success",
      reason: `role ${input.role}`,
    });
    return this.toView(this.require(input.username));
  }

  private insert(
    username: string,
    role: Role,
    allowedGroups: string[],
    verifiers: PasswordVerifiers,
    legacySalt: string | null,
    legacyHash: string | null,
  ): boolean {
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
  update(actor: Actor, username: string, changes: { role?: Role; allowedGroups?: string[] }): UserView {
    const before = this.require(username);
    if (username === BOOTSTRAP_ADMIN && changes.role !== undefined && changes.role !== "admin") {
      // A refused attempt on the bootstrap account is audited, as a refused delete is.
      this.audit.record({
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
    immediate(this.db, () => {
      if (!this.users.update(username, changes)) throw notFound(`no user named ${JSON.stringify(username)}`);
      if (roleChanged) this.sessions.revokeUser(before.id, "role changed");
      else this.sessions.forgetUser(before.id);
      this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.update",
        target: username,
        outcome: "success",
        reason: parts.join("; ") || null,
      });
    });
    if (roleChanged) this.events.emit("credentials.changed", { username });
    return this.toView(this.require(username));
  }

  delete(actor: Actor, username: string): void {
    if (username === BOOTSTRAP_ADMIN) {
      this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.delete",
        target: username,
        outcome: "denied",
        reason: "bootstrap admin",
      });
      throw forbidden(`the bootstrap account ${BOOTSTRAP_ADMIN} cannot be deleted`);
    }
    const user = this.require(username);
    // Sessions and account go in one transaction, so that no request or login slips in between.
    immediate(this.db, () => {
      this.sessions.revokeUser(user.id, "user deleted");
      if (!this.users.delete(username)) throw notFound(`no user named ${JSON.stringify(username)}`);
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.delete", target: username, outcome: "success" });
    });
    this.events.emit("credentials.changed", { username });
  }

  async changePassword(actor: Actor, username: string, password: string): Promise<void> {
    this.require(username);
    this.refuseEnvManagedPassword(actor, username);
    await this.setPassword(actor, username, password, null);
  }

  /** Stores new verifiers, ends every session and voids every login in flight, in one commit. */
  private async setPassword(actor: Actor, username: string, password: string, reason: string | null): Promise<void> {
    const verifiers = await makeVerifiers(password);
    immediate(this.db, () => {
      const user = this.users.get(username);
      if (!user || !this.users.setPassword(username, verifiers.passwordHash, verifiers.scram, this.clock())) {
        throw notFound(`no user named ${JSON.stringify(username)}`);
      }
      this.sessions.revokeUser(user.id, "password changed");
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.passwd", target: username, outcome: "success", reason });
    });
    this.events.emit("credentials.changed", { username });
  }

  private refuseEnvManagedPassword(actor: Actor, username: string): void {
    if (username !== BOOTSTRAP_ADMIN || !this.adminPasswordFromEnv()) return;
    this.audit.record({
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
    this.settings.set(ADMIN_PASSWORD_FROM_ENV, givenPassword !== undefined);
    const system: Actor = { name: "system", address: null };
    const existing = this.users.get(BOOTSTRAP_ADMIN);
    if (existing) {
      if (givenPassword === undefined) return { created: false, changed: false };
      if (await verifyPassword(passwordInput(givenPassword, existing.legacy_salt), existing.password_hash))
        return { created: false, changed: false };
      await this.setPassword(system, BOOTSTRAP_ADMIN, givenPassword, "LATCHKEY_ADMIN_PASSWORD changed");
      return { created: false, changed: true };
    }
    const generatedPassword = givenPassword === undefined ? randomPassword() : undefined;
    const verifiers = await makeVerifiers(givenPassword ?? generatedPassword!);
    const created = this.insert(BOOTSTRAP_ADMIN, "admin", [], verifiers, null, null);
    if (!created) return { created: false, changed: false };
    this.audit.record({ actor: system.name, address: null, action: "user.bootstrap", target: BOOTSTRAP_ADMIN, outcome: "success" });
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
      const twin = this.users.getIgnoringCase(u.username);
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
    immediate(this.db, () => {
      users.forEach((u, i) => {
        const legacyHash = keepLegacyHash ? u.password_hash : null;
        const twin = existing.get(u.username);
        if (twin) {
          if (
            !this.users.replaceFromImport(twin.id, {
              role: u.role,
              allowedGroups: u.allowed_groups,
              passwordHash: verifiers[i]!.passwordHash,
              scram: verifiers[i]!.scram,
              legacySalt: u.salt,
              legacyHash,
              now: this.clock(),
            })
          ) {
            throw new AppError("conflict", `user ${JSON.stringify(u.username)} changed during the import; nothing was imported`, {
              field: "username",
            });
          }
          this.sessions.revokeUser(twin.id, "replaced by import");
          replacedIds.push(twin.id);
          return;
        }
        const ok = this.insert(u.username, u.role, u.allowed_groups, verifiers[i]!, u.salt, legacyHash);
        if (!ok)
          throw new AppError("conflict", `user ${JSON.stringify(u.username)} already exists; nothing was imported`, { field: "username" });
      });
      const reasons = [keepLegacyHash ? "legacy challenge kept" : null, existing.size > 0 ? `${existing.size} replaced` : null].filter(
        Boolean,
      );
      this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user.import",
        target: `${users.length} users`,
        outcome: "success",
        reason: reasons.join("; ") || null,
      });
    });
    for (const username of existing.keys()) this.events.emit("credentials.changed", { username });
    return { created: users.length - existing.size, replaced: existing.size };
  }

  /** Accounts that can be written back to a users.json: those that still hold their wsauth hash. */
  exportLegacy(): LegacyUser[] {
    return this.users.withLegacyHash().map((row) => ({
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
