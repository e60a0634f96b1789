/**
 * Pre-shared enrollment keys (woho seed): generated in batches, shown in full to admins and masked
 * to viewers, revoked, reset to pending or deleted; the install command a machine owner runs.
 * Only the hash of a key's normalized form is looked up, so typing it in any case, with or
 * without dashes, finds it.
 */
import type { EnrollmentStore, KeyRow, KeyStatus } from "../../db/enrollment.ts";
import type { Sql } from "../../db/sql.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { notFound } from "../errors.ts";
import type { EventHub, PushTopics } from "../events.ts";
import { isoTime } from "../fields.ts";
import { maskSecret, randomFromAlphabet, sha256Hex } from "../secrets.ts";
import type { Principal } from "../sessions.ts";
import type { RefusalReason } from "./registration.ts";

/** The woho alphabet: no 0 O 1 I L, so that a key read aloud or retyped survives. */
export const KEY_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";

export function newEnrollmentKey(): string {
  const raw = randomFromAlphabet(KEY_ALPHABET, 12);
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
  return sha256Hex(normalized);
}

/** The mTLS listener's port the agent assumes when the install command names none. */
export const DEFAULT_MTLS_PORT = 9443;

/** Where an install command points the agent: the main listener, and the pinned root of the mTLS one. */
export interface InstallTarget {
  /** HOST:PORT of the main listener. */
  server: string;
  /** SHA-256 of the root CA's DER, lowercase hex. */
  caFingerprint: string;
  /** The mTLS listener's port, when known. */
  mtlsPort: number | null;
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

/** What a client whose key goes away is told as its socket closes: what it would hear on reconnect. */
const KEY_GONE: RefusalReason = "invalid_key";

export interface KeyList {
  items: KeyView[];
  total: number;
  /** Of all the keys the caller may see, whatever the status filter. */
  by_status: Record<KeyStatus, number>;
}

export class EnrollmentKeys {
  constructor(
    private readonly sql: Sql,
    private readonly store: EnrollmentStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
  ) {}

  async generate(
    actor: Actor,
    input: { quantity: number; label: string; expiresAt: number | null; group: string | null },
  ): Promise<KeyView[]> {
    const now = this.clock();
    const ids = await this.sql.transaction(async () => {
      const made: number[] = [];
      while (made.length < input.quantity) {
        const key = newEnrollmentKey();
        // A collision (31^12 keys) is astronomically rare; the unique hash index makes it a retry.
        const id = await this.store.insertKey({
          key,
          keyHash: hashEnrollmentKey(normalizeKey(key)!),
          label: input.label,
          group: input.group,
          expiresAt: input.expiresAt,
          now,
        });
        if (id !== null) made.push(id);
      }
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "key.generate",
        target: `${made.length} keys`,
        outcome: "success",
        reason: input.label || null,
      });
      return made;
    });
    this.events.emit("push", { topic: "keys.changed", args: { ids, change: "generated" }, groups: input.group ? [input.group] : [] });
    return Promise.all(ids.map(async (id) => this.view(await this.require(id), true)));
  }

  /** A page of keys, and how many of the viewer's keys are in each state (for the dashboard). */
  async list(viewer: Principal | null, filter: { status?: KeyStatus | undefined }, limit: number, offset: number): Promise<KeyList> {
    const admin = viewer === null || viewer.role === "admin";
    const scoped = { ...filter, groups: admin ? undefined : viewer!.groups };
    const [rows, total, byStatus] = await Promise.all([
      this.store.keys(scoped, limit, offset),
      this.store.countKeys(scoped),
      this.store.countByStatus(scoped),
    ]);
    return { items: await Promise.all(rows.map((k) => this.view(k, admin))), total, by_status: byStatus };
  }

  async get(viewer: Principal | null, id: number): Promise<KeyView> {
    const key = await this.require(id);
    const admin = viewer === null || viewer.role === "admin";
    if (!admin && (key.client_group === null || !viewer!.groups.includes(key.client_group))) throw notFound(`no key with id ${id}`);
    return this.view(key, admin);
  }

  async revoke(actor: Actor, id: number): Promise<KeyView> {
    const key = await this.change(id, async (key) => {
      await this.store.revoke(id);
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "key.revoke",
        target: `key ${id}`,
        outcome: "success",
        reason: key.client_uuid ? `bound to ${key.client_uuid}` : null,
      });
    });
    this.changed(actor, key, "revoked");
    return this.view(await this.require(id), true);
  }

  async reset(actor: Actor, id: number): Promise<KeyView> {
    const key = await this.change(id, async (key) => {
      await this.store.reset(id);
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "key.reset",
        target: `key ${id}`,
        outcome: "success",
        reason: key.client_uuid ? `unbound from ${key.client_uuid}` : null,
      });
    });
    this.changed(actor, key, "reset");
    return this.view(await this.require(id), true);
  }

  async delete(actor: Actor, id: number): Promise<void> {
    const key = await this.change(id, async () => {
      await this.store.deleteKey(id);
      await this.audit.record({ actor: actor.name, address: actor.address, action: "key.delete", target: `key ${id}`, outcome: "success" });
    });
    this.changed(actor, key, "deleted");
  }

  /**
   * Runs an admin's change of a key in one transaction with its audit entry, and returns the key
   * as it was just before: read locked, so that a registration cannot bind it unseen in between
   * (the client it was bound to is the one whose connection `changed` closes).
   */
  private async change(id: number, write: (key: KeyRow) => Promise<void>): Promise<KeyRow> {
    return this.sql.transaction(async () => {
      const key = await this.store.lockedKey(id);
      if (!key) throw notFound(`no key with id ${id}`);
      await write(key);
      return key;
    });
  }

  /**
   * The command a machine owner runs (the panel's Copy button). It pins the server by its root
   * CA's fingerprint, so that the agent enrolls over TLS on the mTLS listener (`-mtls-port` when it
   * is not the default 9443) and the key never crosses the network in clear. The client's name
   * defaults to the machine's hostname: a batch of keys shares one label, not one name.
   */
  async installCommand(id: number, target: InstallTarget): Promise<string> {
    const key = await this.require(id);
    const port = target.mtlsPort !== null && target.mtlsPort !== DEFAULT_MTLS_PORT ? ` -mtls-port ${target.mtlsPort}` : "";
    return `latchkey client install -server ${target.server} -ca-fingerprint ${target.caFingerprint}${port} -key ${key.key}`;
  }

  private changed(actor: Actor, key: KeyRow, change: PushTopics["keys.changed"]["change"]): void {
    // The bound client loses its right to be connected: close its socket at once and revoke its
    // certificates — if it was admitted with this key (a revoked key stays bound to a client that
    // since re-enrolled with another).
    if (key.client_uuid !== null) {
      this.events.emit("clients.kick", { uuids: [key.client_uuid], reason: KEY_GONE, keyId: key.id, actor });
    }
    this.events.emit("push", {
      topic: "keys.changed",
      args: { ids: [key.id], change },
      groups: key.client_group ? [key.client_group] : [],
    });
  }

  private async require(id: number): Promise<KeyRow> {
    const key = await this.store.key(id);
    if (!key) throw notFound(`no key with id ${id}`);
    return key;
  }

  private async view(k: KeyRow, reveal: boolean): Promise<KeyView> {
    const client = k.client_uuid ? await this.store.client(k.client_uuid) : null;
    return {
      id: k.id,
      key: reveal ? k.key : maskSecret(k.key),
      label: k.label,
      status: k.status,
      client_uuid: k.client_uuid,
      client_name: client?.name ?? null,
      group: k.client_group,
      usage_count: k.usage_count,
      created_at: isoTime(k.created_at),
      first_used_at: isoTime(k.first_used_at),
      last_used_at: isoTime(k.last_used_at),
      expires_at: isoTime(k.expires_at),
      expired: k.expires_at !== null && this.clock() >= k.expires_at,
    };
  }
}
