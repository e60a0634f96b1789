/**
 * Pre-shared enrollment keys and client registration (woho seed): keys go pending → active
 * (bound to one client UUID) → revoked; reset returns a key to pending; a registration follows
 * the woho table exactly, and the pending → active step is one conditional UPDATE.
 */
import type { Database } from "bun:sqlite";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { immediate } from "../db/open.ts";
import type { ClientRow, EnrollmentStore, KeyRow, KeyStatus } from "../db/enrollment.ts";
import type { SettingsStore } from "../db/settings.ts";
import type { Actor } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { AppError, notFound } from "./errors.ts";
import type { EventHub } from "./events.ts";
import type { Principal } from "./sessions.ts";

/** The woho alphabet: no 0 O 1 I L, so that a key read aloud or retyped survives. */
export const KEY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

export const AUTH_REQUIRED = "AUTH_REQUIRED";
export const INVALID_KEY = "AUTH_FAILED: Invalid or revoked key";
export const BOUND_ELSEWHERE = "AUTH_FAILED: Key already bound to a different client";
export const KEY_IN_USE = "AUTH_FAILED: Key already in use";
export const ALREADY_CONNECTED = "AUTH_FAILED: Client already connected";

/**
 * How long after a key's binding another UUID presenting it is taken for a machine that raced the
 * winner for the pending key (`KEY_IN_USE`: generate a separate key per machine); from then on it
 * is a different machine, e.g. a reinstall with a new UUID (`BOUND_ELSEWHERE`: reset the key).
 */
export const KEY_IN_USE_WINDOW_MS = 10_000;

export function newEnrollmentKey(): string {
  let raw = "";
  const limit = 256 - (256 % KEY_ALPHABET.length);
  while (raw.length < 12) {
    for (const b of randomBytes(24)) if (b < limit && raw.length < 12) raw += KEY_ALPHABET[b % KEY_ALPHABET.length];
  }
  return `${raw.slice(0, 4)}-${raw.slice(4, 8)}-${raw.slice(8)}`;
}

/** Keys are typed in any case, with or without dashes (or spaces); null when it cannot be a key. */
export function normalizeKey(input: string): string | null {
  const raw = input.toUpperCase().replace(/[\s-]/g, "");
  if (raw.length !== 12) return null;
  for (const ch of raw) if (!KEY_ALPHABET.includes(ch)) return null;
  return raw;
}

export function hashEnrollmentKey(normalized: string): string {
  return createHash("sha256").update(normalized).digest("hex");
}

export interface KeyView {
  id: number;
  key: string;
  label: string;
  status: KeyStatus;
  client_uuid: string | null;
  client_name: string | null;
  group: string | null;
  usage_count: number;
  created_at: string;
  first_used_at: string | null;
  last_used_at: string | null;
  expires_at: string | null;
  expired: boolean;
}

export interface ClientView {
  uuid: string;
  name: string;
  hostname: string;
  group: string | null;
  key_id: number | null;
  version: string;
  os: string;
  address: string | null;
  interfaces: { name: string; addresses: string[] }[];
  online: boolean;
  first_seen_at: string;
  last_seen_at: string;
}

export interface RegisterArgs {
  uuid: string;
  name: string;
  hostname: string;
  version: string;
  os: string;
  auth_key?: string | undefined;
}

export interface Registration {
  uuid: string;
  group: string | null;
  /** The key was already bound to this client (a reconnect), or no key was needed. */
  reconnect: boolean;
  /** The key this registration was admitted with (null when none was required). */
  keyId: number | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function maskKey(key: string): string {
  return `${key.slice(0, 4)}-••••-••••`;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Enrollment {
  /** Who is connected right now; the WebSocket layer tells. */
  private online: (uuid: string) => boolean = () => false;
  private onlineList: () => string[] = () => [];

  constructor(
    private readonly db: Database,
    private readonly store: EnrollmentStore,
    private readonly settings: SettingsStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
  ) {}

  setPresence(online: (uuid: string) => boolean, list: () => string[]): void {
    this.online = online;
    this.onlineList = list;
  }

  // ---- settings -----------------------------------------------------------------------

  requireAuthKey(): boolean {
    return this.settings.get<boolean>("require_auth_key") ?? false;
  }

  getSettings(): { require_auth_key: boolean } {
    return { require_auth_key: this.requireAuthKey() };
  }

  updateSettings(actor: Actor, changes: { require_auth_key?: boolean | undefined }): { require_auth_key: boolean } {
    if (changes.require_auth_key !== undefined) {
      this.settings.set("require_auth_key", changes.require_auth_key);
      this.audit.record({ actor: actor.name, address: actor.address, action: "settings.update", target: "require_auth_key", outcome: "success", reason: String(changes.require_auth_key) });
      this.events.emit("push", { topic: "settings.changed", args: this.getSettings() });
    }
    return this.getSettings();
  }

  // ---- keys ---------------------------------------------------------------------------

  generate(actor: Actor, input: { quantity: number; label: string; expiresAt: number | null; group: string | null }): KeyView[] {
    const now = this.clock();
    const ids = immediate(this.db, () => {
      const made: number[] = [];
      while (made.length < input.quantity) {
        const key = newEnrollmentKey();
        // A collision (31^12 keys) is astronomically rare; the unique hash index makes it a retry.
        const id = this.store.insertKey({ key, keyHash: hashEnrollmentKey(normalizeKey(key)!), label: input.label, group: input.group, expiresAt: input.expiresAt, now });
        if (id !== null) made.push(id);
      }
      this.audit.record({ actor: actor.name, address: actor.address, action: "key.generate", target: `${made.length} keys`, outcome: "success", reason: input.label || null });
      return made;
    });
    this.events.emit("push", { topic: "keys.changed", args: { ids, change: "generated" }, groups: input.group ? [input.group] : [] });
    return ids.map((id) => this.keyView(this.requireKey(id), true));
  }

  listKeys(viewer: Principal | null, filter: { status?: KeyStatus | undefined }, limit: number, offset: number): { items: KeyView[]; total: number } {
    const admin = viewer === null || viewer.role === "admin";
    const scoped = { ...filter, groups: admin ? undefined : viewer!.groups };
    return { items: this.store.keys(scoped, limit, offset).map((k) => this.keyView(k, admin)), total: this.store.countKeys(scoped) };
  }

  getKey(viewer: Principal | null, id: number): KeyView {
    const key = this.requireKey(id);
    const admin = viewer === null || viewer.role === "admin";
    if (!admin && (key.client_group === null || !viewer!.groups.includes(key.client_group))) throw notFound(`no key with id ${id}`);
    return this.keyView(key, admin);
  }

  revokeKey(actor: Actor, id: number): KeyView {
    const key = this.requireKey(id);
    this.store.revoke(id);
    this.audit.record({ actor: actor.name, address: actor.address, action: "key.revoke", target: `key ${id}`, outcome: "success", reason: key.client_uuid ? `bound to ${key.client_uuid}` : null });
    this.changed(key, "revoked");
    return this.keyView(this.requireKey(id), true);
  }

  resetKey(actor: Actor, id: number): KeyView {
    const key = this.requireKey(id);
    this.store.reset(id);
    this.audit.record({ actor: actor.name, address: actor.address, action: "key.reset", target: `key ${id}`, outcome: "success", reason: key.client_uuid ? `unbound from ${key.client_uuid}` : null });
    this.changed(key, "reset");
    return this.keyView(this.requireKey(id), true);
  }

  deleteKey(actor: Actor, id: number): void {
    const key = this.requireKey(id);
    this.store.deleteKey(id);
    this.audit.record({ actor: actor.name, address: actor.address, action: "key.delete", target: `key ${id}`, outcome: "success" });
    this.changed(key, "deleted");
  }

  /** The command a machine owner runs: the panel's Copy button. */
  installCommand(id: number, serverAddress: string): string {
    const key = this.requireKey(id);
    const name = key.label.trim() ? ` -name ${shellQuote(key.label.trim())}` : "";
    return `latchkey client install -server ${serverAddress}${name} -key ${key.key}`;
  }

  private changed(key: KeyRow, change: string): void {
    // The bound client loses its right to be connected: close its socket at once — if it was
    // admitted with this key (a revoked key stays bound to a client that since re-enrolled with another).
    if (key.client_uuid !== null) this.events.emit("clients.kick", { uuids: [key.client_uuid], reason: INVALID_KEY, keyId: key.id });
    this.events.emit("push", { topic: "keys.changed", args: { ids: [key.id], change }, groups: key.client_group ? [key.client_group] : [] });
  }

  private requireKey(id: number): KeyRow {
    const key = this.store.key(id);
    if (!key) throw notFound(`no key with id ${id}`);
    return key;
  }

  private keyView(k: KeyRow, reveal: boolean): KeyView {
    const client = k.client_uuid ? this.store.client(k.client_uuid) : null;
    return {
      id: k.id,
      key: reveal ? k.key : maskKey(k.key),
      label: k.label,
      status: k.status,
      client_uuid: k.client_uuid,
      client_name: client?.name ?? null,
      group: k.client_group,
      usage_count: k.usage_count,
      created_at: iso(k.created_at)!,
      first_used_at: iso(k.first_used_at),
      last_used_at: iso(k.last_used_at),
      expires_at: iso(k.expires_at),
      expired: k.expires_at !== null && this.clock() >= k.expires_at,
    };
  }

  // ---- registration -------------------------------------------------------------------

  /**
   * `client/register`, the woho table. `alreadyConnected` tells whether another live socket
   * holds this UUID (a clone): refused, and the first stays connected.
   */
  register(args: RegisterArgs, address: string | null, alreadyConnected: boolean): Registration {
    const now = this.clock();
    const refuse = (message: string, code: "forbidden" | "conflict" = "forbidden"): never => {
      throw new Refusal(message, code);
    };
    // The key is looked up by its secret before the write lock is taken; what it says is decided
    // under the lock, on the row as it is then.
    const lookup = (): KeyRow | null => {
      if (alreadyConnected) refuse(ALREADY_CONNECTED, "conflict");
      if (!this.requireAuthKey()) return null;
      if (args.auth_key === undefined || args.auth_key.trim() === "") refuse(AUTH_REQUIRED);
      const normalized = normalizeKey(args.auth_key!);
      const found = normalized === null ? null : this.store.keyByHash(hashEnrollmentKey(normalized));
      if (!found || !sameSecret(normalizeKey(found.key)!, normalized!) || found.status === "revoked") return refuse(INVALID_KEY);
      return found;
    };
    // The binding, the client row and the audit entry commit together: one durable write per
    // registration, and never a bound key without its client.
    const attempt = (found: KeyRow | null) => {
      let reconnect = true;
      // Re-read under the lock: since the lookup, a registration in this process or the other
      // may have bound the key (the loser of a race then reads it active), or an admin changed it.
      const key = found && this.store.key(found.id);
      if (found && (!key || key.status === "revoked")) return refuse(INVALID_KEY);
      if (key) {
        if (key.status === "active") {
          if (key.client_uuid !== args.uuid) refuse(otherClientRefusal(key, now));
          // A restart is not a re-enrollment: the bound client reconnects even after its key's expiry.
          if (!this.store.recordReuse(key.id, args.uuid, now)) refuse(INVALID_KEY);
        } else {
          if (key.expires_at !== null && now >= key.expires_at) refuse(INVALID_KEY);
          // Conditional all the same: the affected-row count, not the read above, decides the winner.
          if (!this.store.bindPending(key.id, args.uuid, now)) refuse(KEY_IN_USE);
          reconnect = false;
        }
      }
      this.store.upsertClient({ uuid: args.uuid, name: args.name, hostname: args.hostname, group: key?.client_group ?? null, keyId: key?.id ?? null, version: args.version, os: args.os, address, now });
      this.audit.record({ actor: `client:${args.uuid}`, address, action: "client.register", target: args.uuid, outcome: "success", reason: key ? `key ${key.id}${reconnect ? " (reconnect)" : " bound"}` : "no key required" });
      return { key, reconnect, client: this.store.client(args.uuid)! };
    };
    let outcome: ReturnType<typeof attempt>;
    try {
      const key = lookup();
      outcome = immediate(this.db, () => attempt(key));
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      this.audit.record({ actor: `client:${args.uuid}`, address, action: "client.register", target: args.uuid, outcome: "failure", reason: error.message });
      throw new AppError(error.code, error.message);
    }
    const { key, reconnect, client } = outcome;
    this.events.emit("push", { topic: "clients.online", args: { uuid: args.uuid, name: args.name, group: client.client_group }, groups: client.client_group ? [client.client_group] : [] });
    if (key && !reconnect) this.events.emit("push", { topic: "keys.changed", args: { ids: [key.id], change: "bound" }, groups: key.client_group ? [key.client_group] : [] });
    return { uuid: args.uuid, group: client.client_group, reconnect, keyId: key?.id ?? null };
  }

  /** A registered client's socket closed. */
  disconnected(uuid: string): void {
    this.store.touchClient(uuid, this.clock());
    const client = this.store.client(uuid);
    this.events.emit("push", { topic: "clients.offline", args: { uuid }, groups: client?.client_group ? [client.client_group] : [] });
  }

  /**
   * Connected clients whose key (the one each was admitted with) was revoked, reset or deleted,
   * by this process or another.
   */
  lostBindings(bound: { uuid: string; keyId: number }[]): string[] {
    return this.store.revokedBindings(bound);
  }

  // ---- clients ------------------------------------------------------------------------

  listClients(
    viewer: Principal,
    filter: { status?: "online" | "offline" | undefined; group?: string | undefined },
    limit: number,
    offset: number,
  ): { items: ClientView[]; total: number } {
    const online = this.onlineList();
    const scoped = {
      group: filter.group,
      groups: viewer.role === "admin" ? undefined : viewer.groups,
      ...(filter.status === "online" ? { uuids: online } : filter.status === "offline" ? { excludeUuids: online } : {}),
    };
    return { items: this.store.clients(scoped, limit, offset).map((c) => this.clientView(c)), total: this.store.countClients(scoped) };
  }

  getClient(viewer: Principal, uuid: string): ClientView {
    const client = this.store.client(uuid);
    if (!client || (viewer.role !== "admin" && (client.client_group === null || !viewer.groups.includes(client.client_group)))) {
      throw notFound(`no client ${uuid}`);
    }
    return this.clientView(client);
  }

  /** Deletes a client: its key is revoked with it and its connection closed. */
  deleteClient(actor: Actor, uuid: string): void {
    const client = this.store.client(uuid);
    if (!client) throw notFound(`no client ${uuid}`);
    const revoked = immediate(this.db, () => {
      const ids = this.store.revokeKeysOf(uuid);
      this.store.deleteClient(uuid);
      return ids;
    });
    this.audit.record({ actor: actor.name, address: actor.address, action: "client.delete", target: uuid, outcome: "success", reason: revoked.length ? `revoked key ${revoked.join(", ")}` : null });
    this.events.emit("clients.kick", { uuids: [uuid], reason: INVALID_KEY });
    this.events.emit("push", { topic: "clients.deleted", args: { uuid }, groups: client.client_group ? [client.client_group] : [] });
  }

  private clientView(c: ClientRow): ClientView {
    return {
      uuid: c.uuid,
      name: c.name,
      hostname: c.hostname,
      group: c.client_group,
      key_id: c.key_id,
      version: c.version,
      os: c.os,
      address: c.address,
      interfaces: JSON.parse(c.interfaces) as ClientView["interfaces"],
      online: this.online(c.uuid),
      first_seen_at: iso(c.first_seen_at)!,
      last_seen_at: iso(c.last_seen_at)!,
    };
  }
}

/**
 * What another UUID presenting an active key is told: within `KEY_IN_USE_WINDOW_MS` of the
 * binding (`first_used_at`, set afresh by every pending → active step, so a reset key's next
 * binding opens a new window) it lost a race for the pending key, later the key is simply taken.
 */
function otherClientRefusal(key: KeyRow, now: number): string {
  return key.first_used_at !== null && now - key.first_used_at < KEY_IN_USE_WINDOW_MS ? KEY_IN_USE : BOUND_ELSEWHERE;
}

/** A registration refused by the woho table; thrown inside the transaction so that it rolls back. */
class Refusal extends Error {
  constructor(
    message: string,
    readonly code: "forbidden" | "conflict",
  ) {
    super(message);
  }
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9._@:-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

