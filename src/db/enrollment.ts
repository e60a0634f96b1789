import { insertAuditRow } from "./audit.ts";
import { claimPresence } from "./nodes.ts";
import { REQUIRE_AUTH_KEY, SettingsStore } from "./settings.ts";
import type { Param, Sql } from "./sql.ts";

export type KeyStatus = "pending" | "active" | "revoked";

export interface KeyRow {
  id: number;
  key: string;
  key_hash: string;
  label: string;
  status: KeyStatus;
  client_uuid: string | null;
  client_group: string | null;
  usage_count: number;
  created_at: number;
  first_used_at: number | null;
  last_used_at: number | null;
  expires_at: number | null;
}

export interface ClientRow {
  uuid: string;
  name: string;
  hostname: string;
  client_group: string | null;
  key_id: number | null;
  version: string;
  os: string;
  address: string | null;
  interfaces: string;
  first_seen_at: number;
  last_seen_at: number;
}

/** A connected client and the key it was admitted with. */
export interface Binding {
  uuid: string;
  keyId: number;
}

/** Why a registration is refused (core/enrollment/registration.ts says what each means). */
export type RegistrationRefusal = "auth_required" | "invalid_key" | "bound_elsewhere" | "key_in_use" | "already_connected";

/** A client's registration as EnrollmentStore.register makes it. */
export interface Registering {
  uuid: string;
  name: string;
  hostname: string;
  version: string;
  os: string;
  address: string | null;
  /** The time of the registration, and of its audit entry. */
  now: number;
  /** The key sent: null when none was; `hash` is null when it is not a well-formed key. */
  key: { hash: string | null } | null;
  /** The client's presence: the node registering it, the claim's id, and the time on the leases' clock. */
  presence: { nodeId: string; claim: string; leaseNow: number };
  /** How long after a key's binding another UUID presenting it is told `key_in_use`, not `bound_elsewhere`. */
  keyInUseMs: number;
}

export type RegisteringOutcome =
  | {
      kind: "registered";
      /** The key was already bound to this client, or no key was needed. */
      reconnect: boolean;
      keyId: number | null;
      keyGroup: string | null;
      clientGroup: string | null;
      /** The reason written in the audit entry. */
      auditReason: string;
    }
  | { kind: "refused"; reason: RegistrationRefusal; keyGroup: string | null };

export interface KeyFilter {
  status?: KeyStatus | undefined;
  /** Only keys whose client group is one of these (viewers). */
  groups?: string[] | undefined;
}

export interface ClientFilter {
  group?: string | undefined;
  groups?: string[] | undefined;
  uuids?: string[] | undefined;
  excludeUuids?: string[] | undefined;
}

/**
 * The strings of a JSON array given as one parameter, as a one-column (`value`) set. On PostgreSQL
 * the parameter is text cast to jsonb: a parameter typed jsonb would be JSON-encoded again by
 * Bun.SQL (a string, not the array it spells).
 */
const JSON_STRINGS = {
  sqlite: "SELECT value FROM json_each(?)",
  postgres: "SELECT value FROM jsonb_array_elements_text(CAST(? AS text)::jsonb)",
};

/**
 * Of (client, key id) pairs given as one JSON parameter, those whose key is gone or no longer
 * active for the client. On PostgreSQL each pair looks its key up by id (LATERAL … LIMIT 1): the
 * planner, taking the array for a hundred rows, would otherwise read every key into a hash table
 * for the one or two pairs a registration checks (1.7 ms a call with 10,000 keys).
 */
const REVOKED_BINDINGS = {
  sqlite: `SELECT j.value ->> '$.uuid' AS uuid, j.value ->> '$.keyId' AS "keyId" FROM json_each(?) j
           LEFT JOIN enrollment_keys k ON k.id = j.value ->> '$.keyId'
           WHERE k.id IS NULL OR k.status <> 'active' OR k.client_uuid IS NOT j.value ->> '$.uuid'`,
  postgres: `SELECT j.uuid, j."keyId" FROM
               (SELECT value ->> 'uuid' AS uuid, (value ->> 'keyId')::bigint AS "keyId" FROM jsonb_array_elements(CAST(? AS text)::jsonb)) j
             LEFT JOIN LATERAL (SELECT status, client_uuid FROM enrollment_keys WHERE id = j."keyId" LIMIT 1) k ON true
             WHERE k.status IS NULL OR k.status <> 'active' OR k.client_uuid IS DISTINCT FROM j.uuid`,
};

const LOCKED_KEY = {
  sqlite: "SELECT * FROM enrollment_keys WHERE id = ?",
  postgres: "SELECT * FROM enrollment_keys WHERE id = ? FOR UPDATE",
};

/** Clients by name, then UUID, in byte order on both (PostgreSQL would otherwise sort by the database's locale). */
const CLIENT_ORDER = {
  sqlite: "ORDER BY name, uuid",
  postgres: 'ORDER BY name COLLATE "C", uuid COLLATE "C"',
};

/** Queries over enrollment keys and clients. */
export class EnrollmentStore {
  constructor(private readonly sql: Sql) {}

  private groupClause(column: string, groups: string[] | undefined, clauses: string[], params: Param[]): void {
    if (groups === undefined) return;
    clauses.push(`${column} IN (${JSON_STRINGS[this.sql.dialect]})`);
    params.push(JSON.stringify(groups));
  }

  /**
   * A client's registration, durable when this returns (SPEC §3, woho's `client/register`): the
   * setting read, the key sent locked and judged, the client's presence claimed, the key bound or
   * its reuse counted, the client row written and the audit entry with it. Every refusal is decided
   * before anything is written. On PostgreSQL one call (latchkey_register, migration 0014) whose
   * commit lets the key's row go before the disk write, then the shared Sql.flush; on SQLite the
   * same statements in one transaction, whose commit lets the write lock go before its log is
   * synced (`releaseBeforeFlush`).
   */
  async register(r: Registering): Promise<RegisteringOutcome> {
    if (this.sql.dialect === "postgres") {
      const row = (await this.sql.get<{
        outcome: "registered" | RegistrationRefusal;
        reconnect: boolean | null;
        key_id: number | null;
        key_group: string | null;
        client_group: string | null;
        audit_reason: string | null;
      }>("SELECT * FROM latchkey_register(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        r.uuid,
        r.presence.claim,
        r.presence.nodeId,
        r.presence.leaseNow,
        r.key !== null,
        r.key?.hash ?? null,
        r.name,
        r.hostname,
        r.version,
        r.os,
        r.address,
        r.now,
        r.keyInUseMs,
      ]))!;
      if (row.outcome !== "registered") return { kind: "refused", reason: row.outcome, keyGroup: row.key_group };
      await this.sql.flush();
      return {
        kind: "registered",
        reconnect: row.reconnect!,
        keyId: row.key_id,
        keyGroup: row.key_group,
        clientGroup: row.client_group,
        auditReason: row.audit_reason!,
      };
    }
    return this.sql.transaction(() => this.registerInStatements(r), { releaseBeforeFlush: true });
  }

  /** EnrollmentStore.register on SQLite: its transaction's write lock keeps every row as read. */
  private async registerInStatements(r: Registering): Promise<RegisteringOutcome> {
    let key: KeyRow | null = null;
    const refused = (reason: RegistrationRefusal): RegisteringOutcome => ({ kind: "refused", reason, keyGroup: key?.client_group ?? null });
    let reconnect = true;
    if ((await new SettingsStore(this.sql).get<boolean>(REQUIRE_AUTH_KEY)) === true) {
      if (r.key === null) return refused("auth_required");
      key = r.key.hash === null ? null : await this.keyByHash(r.key.hash);
      if (key === null || key.status === "revoked") return refused("invalid_key");
      if (key.status === "pending" && key.expires_at !== null && r.now >= key.expires_at) return refused("invalid_key");
      if (key.status === "active" && key.client_uuid !== r.uuid) {
        const racedWinner = key.first_used_at !== null && r.now - key.first_used_at < r.keyInUseMs;
        return refused(racedWinner ? "key_in_use" : "bound_elsewhere");
      }
      reconnect = key.status === "active";
    }
    const { nodeId, claim, leaseNow } = r.presence;
    if (!(await claimPresence(this.sql, r.uuid, nodeId, claim, leaseNow))) return refused("already_connected");
    if (key !== null) {
      const counted = reconnect ? await this.recordReuse(key.id, r.uuid, r.now) : await this.bindPending(key.id, r.uuid, r.now);
      if (!counted) throw new Error(`enrollment key ${key.id} changed under the write lock`);
    }
    const auditReason = key === null ? "no key required" : `key ${key.id}${reconnect ? " (reconnect)" : " bound"}`;
    const clientGroup = await this.upsertClient({ ...r, group: key?.client_group ?? null, keyId: key?.id ?? null });
    await insertAuditRow(this.sql, {
      at: r.now,
      actor: `client:${r.uuid}`,
      address: r.address,
      action: "client.register",
      target: r.uuid,
      outcome: "success",
      reason: auditReason,
    });
    return { kind: "registered", reconnect, keyId: key?.id ?? null, keyGroup: key?.client_group ?? null, clientGroup, auditReason };
  }

  async insertKey(k: {
    key: string;
    keyHash: string;
    label: string;
    group: string | null;
    expiresAt: number | null;
    now: number;
  }): Promise<number | null> {
    const row = await this.sql.get<{ id: number }>(
      `INSERT INTO enrollment_keys (key, key_hash, label, client_group, expires_at, created_at)
       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      [k.key, k.keyHash, k.label, k.group, k.expiresAt, k.now],
    );
    return row?.id ?? null;
  }

  key(id: number): Promise<KeyRow | null> {
    return this.sql.get<KeyRow>("SELECT * FROM enrollment_keys WHERE id = ?", [id]);
  }

  /**
   * A key read to be changed in the same transaction: on PostgreSQL its row is locked until the
   * transaction ends (a registration binding it meanwhile waits, or is waited for); on SQLite the
   * transaction's write lock already keeps it as read.
   */
  lockedKey(id: number): Promise<KeyRow | null> {
    return this.sql.get<KeyRow>(LOCKED_KEY[this.sql.dialect], [id]);
  }

  keyByHash(hash: string): Promise<KeyRow | null> {
    return this.sql.get<KeyRow>("SELECT * FROM enrollment_keys WHERE key_hash = ?", [hash]);
  }

  private keyWhere(filter: KeyFilter): { sql: string; params: Param[] } {
    const clauses: string[] = [];
    const params: Param[] = [];
    if (filter.status !== undefined) (clauses.push("status = ?"), params.push(filter.status));
    this.groupClause("client_group", filter.groups, clauses, params);
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  keys(filter: KeyFilter, limit: number, offset: number): Promise<KeyRow[]> {
    const { sql, params } = this.keyWhere(filter);
    return this.sql.all<KeyRow>(`SELECT * FROM enrollment_keys ${sql} ORDER BY id DESC LIMIT ? OFFSET ?`, [...params, limit, offset]);
  }

  async countKeys(filter: KeyFilter): Promise<number> {
    const { sql, params } = this.keyWhere(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM enrollment_keys ${sql}`, params))!.n;
  }

  /** Keys by status within the filter's groups (its status, if any, is not applied). */
  async countByStatus(filter: KeyFilter = {}): Promise<Record<KeyStatus, number>> {
    const { sql, params } = this.keyWhere({ ...filter, status: undefined });
    const out: Record<KeyStatus, number> = { pending: 0, active: 0, revoked: 0 };
    const rows = await this.sql.all<{ status: KeyStatus; n: number }>(
      `SELECT status, count(*) AS n FROM enrollment_keys ${sql} GROUP BY status`,
      params,
    );
    for (const r of rows) out[r.status] = r.n;
    return out;
  }

  /**
   * The one-time transition: binds a pending key to a client. The status test is in the same
   * statement, so of many concurrent registrations exactly one changes the row (on PostgreSQL the
   * others wait for its row lock, then find the status changed). `first_used_at` is the binding
   * time, set afresh when a reset key is bound again: the "Key already in use" window counts from it.
   */
  async bindPending(id: number, uuid: string, now: number): Promise<boolean> {
    const changed = await this.sql.run(
      `UPDATE enrollment_keys SET status = 'active', client_uuid = ?, first_used_at = ?, last_used_at = ?,
         usage_count = usage_count + 1
       WHERE id = ? AND status = 'pending'`,
      [uuid, now, now, id],
    );
    return changed === 1;
  }

  /** A reconnect of the bound client: counted, only while the key is still active for it. */
  async recordReuse(id: number, uuid: string, now: number): Promise<boolean> {
    const changed = await this.sql.run(
      "UPDATE enrollment_keys SET usage_count = usage_count + 1, last_used_at = ? WHERE id = ? AND status = 'active' AND client_uuid = ?",
      [now, id, uuid],
    );
    return changed === 1;
  }

  async revoke(id: number): Promise<boolean> {
    return (await this.sql.run("UPDATE enrollment_keys SET status = 'revoked' WHERE id = ?", [id])) === 1;
  }

  async reset(id: number): Promise<boolean> {
    return (await this.sql.run("UPDATE enrollment_keys SET status = 'pending', client_uuid = NULL WHERE id = ?", [id])) === 1;
  }

  async deleteKey(id: number): Promise<boolean> {
    return (await this.sql.run("DELETE FROM enrollment_keys WHERE id = ?", [id])) === 1;
  }

  /**
   * Of these (client, key it was admitted with) pairs, the clients whose key is gone or no
   * longer active for them. Goes by the key id each connection was admitted with, not by
   * clients.key_id: deleting a key sets that to NULL (ON DELETE SET NULL), which would hide it.
   */
  async revokedBindings(bound: Binding[]): Promise<Binding[]> {
    if (bound.length === 0) return [];
    return this.sql.all<Binding>(REVOKED_BINDINGS[this.sql.dialect], [JSON.stringify(bound)]);
  }

  // Clients

  client(uuid: string): Promise<ClientRow | null> {
    return this.sql.get<ClientRow>("SELECT * FROM clients WHERE uuid = ?", [uuid]);
  }

  /** Inserts or updates a client (its group and key kept when none is given); returns its group. */
  async upsertClient(c: {
    uuid: string;
    name: string;
    hostname: string;
    group: string | null;
    keyId: number | null;
    version: string;
    os: string;
    address: string | null;
    now: number;
  }): Promise<string | null> {
    const row = await this.sql.get<{ client_group: string | null }>(
      `INSERT INTO clients (uuid, name, hostname, client_group, key_id, version, os, address, first_seen_at, last_seen_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, hostname = excluded.hostname,
         client_group = coalesce(excluded.client_group, clients.client_group), key_id = coalesce(excluded.key_id, clients.key_id),
         version = excluded.version, os = excluded.os, address = excluded.address, last_seen_at = excluded.last_seen_at
       RETURNING client_group`,
      [c.uuid, c.name, c.hostname, c.group, c.keyId, c.version, c.os, c.address, c.now, c.now],
    );
    return row!.client_group;
  }

  async touchClient(uuid: string, now: number): Promise<void> {
    await this.sql.run("UPDATE clients SET last_seen_at = ? WHERE uuid = ?", [now, uuid]);
  }

  private clientWhere(filter: ClientFilter): { sql: string; params: Param[] } {
    const clauses: string[] = [];
    const params: Param[] = [];
    const strings = JSON_STRINGS[this.sql.dialect];
    if (filter.group !== undefined) (clauses.push("client_group = ?"), params.push(filter.group));
    this.groupClause("client_group", filter.groups, clauses, params);
    if (filter.uuids !== undefined) (clauses.push(`uuid IN (${strings})`), params.push(JSON.stringify(filter.uuids)));
    if (filter.excludeUuids !== undefined) (clauses.push(`uuid NOT IN (${strings})`), params.push(JSON.stringify(filter.excludeUuids)));
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  clients(filter: ClientFilter, limit: number, offset: number): Promise<ClientRow[]> {
    const { sql, params } = this.clientWhere(filter);
    return this.sql.all<ClientRow>(`SELECT * FROM clients ${sql} ${CLIENT_ORDER[this.sql.dialect]} LIMIT ? OFFSET ?`, [
      ...params,
      limit,
      offset,
    ]);
  }

  async countClients(filter: ClientFilter): Promise<number> {
    const { sql, params } = this.clientWhere(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM clients ${sql}`, params))!.n;
  }

  /** The client deleted, or null when there was none. */
  deleteClient(uuid: string): Promise<ClientRow | null> {
    return this.sql.get<ClientRow>("DELETE FROM clients WHERE uuid = ? RETURNING *", [uuid]);
  }

  /** Revokes the keys bound to a client (when the client is deleted). */
  async revokeKeysOf(uuid: string): Promise<number[]> {
    const rows = await this.sql.all<{ id: number }>(
      "UPDATE enrollment_keys SET status = 'revoked' WHERE client_uuid = ? AND status = 'active' RETURNING id",
      [uuid],
    );
    return rows.map((r) => r.id);
  }
}
