import type { Database } from "bun:sqlite";
import { immediate } from "../db/open.ts";
import type { Role, UserRow, UserStore } from "../db/users.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { AppError, badRequest, conflict, forbidden, notFound } from "./errors.ts";
import { makeVerifiers, type PasswordVerifiers } from "./passwords.ts";
import type { Sessions } from "./sessions.ts";
import type { LegacyUser } from "./users-file.ts";

/** The bootstrap account: it always exists, is always an admin, and cannot be deleted. */
export const BOOTSTRAP_ADMIN = "admin";

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
}

export function toUserView(row: UserRow): UserView {
  return {
    username: row.username,
    role: row.role,
    allowed_groups: JSON.parse(row.allowed_groups) as string[],
    created_at: new Date(row.created_at).toISOString(),
    last_login_at: row.last_login_at === null ? null : new Date(row.last_login_at).toISOString(),
    password_changed_at: new Date(row.password_changed_at).toISOString(),
    legacy: row.legacy_salt !== null,
    legacy_challenge: row.legacy_hash !== null,
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
    private readonly clock: Clock,
  ) {}

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
    return toUserView(this.require(username));
  }

  /** Role, groups and password in one call, as PATCH /api/users/{username} takes them. */
  async change(
    actor: Actor,
    username: string,
    changes: { role?: Role | undefined; allowedGroups?: string[] | undefined; password?: string | undefined },
  ): Promise<UserView> {
    this.require(username);
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
    return { items: this.users.list(limit, offset).map(toUserView), total: this.users.count() };
  }

  async create(
    actor: Actor,
    input: { username: string; password: string; role: Role; allowedGroups: string[] },
  ): Promise<UserView> {
    const twin = this.users.getIgnoringCase(input.username);
    if (twin) {
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.create", target: input.username, outcome: "failure", reason: "exists" });
      throw conflict(`a user named ${JSON.stringify(twin.username)} already exists${twin.username === input.username ? "" : " (names differ only in case)"}`, "username");
    }
    const verifiers = await makeVerifiers(input.password);
    const created = this.insert(input.username, input.role, input.allowedGroups, verifiers, null, null);
    if (!created) {
      throw conflict(`a user named ${JSON.stringify(input.username)} already exists`, "username");
    }
    this.audit.record({ actor: actor.name, address: actor.address, action: "user.create", target: input.username, outcome: "success", reason: `role ${input.role}` });
    return toUserView(this.require(input.username));
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

  update(actor: Actor, username: string, changes: { role?: Role; allowedGroups?: string[] }): UserView {
    this.require(username);
    if (username === BOOTSTRAP_ADMIN && changes.role !== undefined && changes.role !== "admin") {
      // A refused attempt on the bootstrap account is audited, as a refused delete is.
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.update", target: username, outcome: "denied", reason: "bootstrap admin" });
      throw forbidden(`the bootstrap account ${BOOTSTRAP_ADMIN} stays an admin`);
    }
    this.users.update(username, changes);
    this.sessions.forgetUser(this.require(username).id);
    const parts = [];
    if (changes.role !== undefined) parts.push(`role ${changes.role}`);
    if (changes.allowedGroups !== undefined) parts.push(`groups [${changes.allowedGroups.join(", ")}]`);
    this.audit.record({ actor: actor.name, address: actor.address, action: "user.update", target: username, outcome: "success", reason: parts.join("; ") || null });
    return toUserView(this.require(username));
  }

  delete(actor: Actor, username: string): void {
    if (username === BOOTSTRAP_ADMIN) {
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.delete", target: username, outcome: "denied", reason: "bootstrap admin" });
      throw forbidden(`the bootstrap account ${BOOTSTRAP_ADMIN} cannot be deleted`);
    }
    const user = this.require(username);
    // Sessions go first and in the same breath, so that no request slips through in between.
    this.sessions.revokeUser(user.id, "user deleted");
    this.users.delete(username);
    this.audit.record({ actor: actor.name, address: actor.address, action: "user.delete", target: username, outcome: "success" });
  }

  async changePassword(actor: Actor, username: string, password: string): Promise<void> {
    const user = this.require(username);
    const verifiers = await makeVerifiers(password);
    this.users.setPassword(username, verifiers.passwordHash, verifiers.scram, this.clock());
    this.sessions.revokeUser(user.id, "password changed");
    this.audit.record({ actor: actor.name, address: actor.address, action: "user.passwd", target: username, outcome: "success" });
  }

  /**
   * Creates the bootstrap admin if it does not exist yet. Returns the generated password when
   * none was given, so that the caller can print it once.
   */
  async bootstrap(givenPassword: string | undefined): Promise<{ created: boolean; generatedPassword?: string }> {
    if (this.users.get(BOOTSTRAP_ADMIN)) return { created: false };
    if (givenPassword !== undefined && (givenPassword.length < 8 || givenPassword.length > 1024)) {
      throw badRequest("LATCHKEY_ADMIN_PASSWORD must be 8 to 1024 characters; set a longer one or unset it to get a random password");
    }
    const generatedPassword = givenPassword === undefined ? randomPassword() : undefined;
    const verifiers = await makeVerifiers(givenPassword ?? generatedPassword!);
    const created = this.insert(BOOTSTRAP_ADMIN, "admin", [], verifiers, null, null);
    if (created) {
      this.audit.record({ actor: "system", address: null, action: "user.bootstrap", target: BOOTSTRAP_ADMIN, outcome: "success" });
    }
    return created ? (generatedPassword === undefined ? { created } : { created, generatedPassword }) : { created: false };
  }

  /**
   * Imports wsauth accounts in one transaction: the legacy hash becomes the password input of
   * the new verifiers; the hash itself is kept only when `keepLegacyHash` (for the opt-in
   * challenge login). Any conflict aborts the whole import.
   */
  async importLegacy(actor: Actor, users: LegacyUser[], keepLegacyHash: boolean): Promise<number> {
    for (const u of users) {
      if (this.users.getIgnoringCase(u.username)) throw conflict(`user ${JSON.stringify(u.username)} already exists; nothing was imported`, "username");
    }
    const verifiers = await Promise.all(users.map((u) => makeVerifiers(u.password_hash)));
    immediate(this.db, () => {
      users.forEach((u, i) => {
        const ok = this.insert(u.username, u.role, u.allowed_groups, verifiers[i]!, u.salt, keepLegacyHash ? u.password_hash : null);
        if (!ok) throw new AppError("conflict", `user ${JSON.stringify(u.username)} already exists; nothing was imported`, { field: "username" });
      });
      this.audit.record({ actor: actor.name, address: actor.address, action: "user.import", target: `${users.length} users`, outcome: "success", reason: keepLegacyHash ? "legacy challenge kept" : null });
    });
    return users.length;
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

function randomPassword(): string {
  const alphabet = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  // 256 is not a multiple of the alphabet's size; rejection keeps the draw uniform.
  let out = "";
  for (const b of bytes) if (b < Math.floor(256 / alphabet.length) * alphabet.length) out += alphabet[b % alphabet.length];
  return out.length >= 16 ? out : out + randomPassword();
}
