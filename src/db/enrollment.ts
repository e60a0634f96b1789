import type { Database } from "bun:sqlite";

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

function groupClause(column: string, groups: string[] | undefined, clauses: string[], params: (string | number)[]): void {
  if (groups === undefined) return;
  clauses.push(`${column} IN (SELECT value FROM json_each(?))`);
  params.push(JSON.stringify(groups));
}

/** Queries over enrollment keys and clients. */
export class EnrollmentStore {
  private readonly byHash;

  constructor(private readonly db: Database) {
    this.byHash = db.query<KeyRow, [string]>("SELECT * FROM enrollment_keys WHERE key_hash = ?");
  }

  insertKey(k: {
    key: string;
    keyHash: string;
    label: string;
    group: string | null;
    expiresAt: number | null;
    now: number;
  }): number | null {
    const row = this.db
      .query<{ id: number }, [string, string, string, string | null, number | null, number]>(
        `INSERT INTO enrollment_keys (key, key_hash, label, client_group, expires_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      )
      .get(k.key, k.keyHash, k.label, k.group, k.expiresAt, k.now);
    return row?.id ?? null;
  }

  key(id: number): KeyRow | null {
    return this.db.query<KeyRow, [number]>("SELECT * FROM enrollment_keys WHERE id = ?").get(id);
  }

  keyByHash(hash: string): KeyRow | null {
    return this.byHash.get(hash);
  }

  private keyWhere(filter: KeyFilter): { sql: string; params: (string | number)[] } {
    const clauses: string[] = [];
    const params: (string | number)[] = [];
    if (filter.status !== undefined) (clauses.push("status = ?"), params.push(filter.status));
    groupClause("client_group", filter.groups, clauses, params);
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  keys(filter: KeyFilter, limit: number, offset: number): KeyRow[] {
    const { sql, params } = this.keyWhere(filter);
    return this.db
      .query<KeyRow, (string | number)[]>(`SELECT * FROM enrollment_keys ${sql} ORDER BY id DESC LIMIT ? OFFSET ?`)
      .all(...params, limit, offset);
  }

  countKeys(filter: KeyFilter): number {
    const { sql, params } = this.keyWhere(filter);
    return this.db.query<{ n: number }, (string | number)[]>(`SELECT count(*) AS n FROM enrollment_keys ${sql}`).get(...params)!.n;
  }

  /** Keys by status within the filter's groups (its status, if any, is not applied). */
  countByStatus(filter: KeyFilter = {}): Record<KeyStatus, number> {
    const { sql, params } = this.keyWhere({ ...filter, status: undefined });
    const out: Record<KeyStatus, number> = { pending: 0, active: 0, revoked: 0 };
    const rows = this.db
      .query<{ status: KeyStatus; n: number }, (string | number)[]>(
        `SELECT status, count(*) AS n FROM enrollment_keys ${sql} GROUP BY status`,
      )
      .all(...params);
    for (const r of rows) out[r.status] = r.n;
    return out;
  }

  /**
   * The one-time transition: binds a pending key to a client. The status test is in the same
   * statement, so of many concurrent registrations exactly one changes the row. `first_used_at`
   * is the binding time, set afresh when a reset key is bound again: the "Key already in use"
   * window counts from it.
   */
  bindPending(id: number, uuid: string, now: number): boolean {
    return (
      this.db
        .query(
          `UPDATE enrollment_keys SET status = 'active', client_uuid = ?, first_used_at = ?, last_used_at = ?,
             usage_count = usage_count + 1
           WHERE id = ? AND status = 'pending'`,
        )
        .run(uuid, now, now, id).changes === 1
    );
  }

  /** A reconnect of the bound client: counted, only while the key is still active for it. */
  recordReuse(id: number, uuid: string, now: number): boolean {
    return (
      this.db
        .query(
          "UPDATE enrollment_keys SET usage_count = usage_count + 1, last_used_at = ? " +
            "WHERE id = ? AND status = 'active' AND client_uuid = ?",
        )
        .run(now, id, uuid).changes === 1
    );
  }

  revoke(id: number): boolean {
    return this.db.query("UPDATE enrollment_keys SET status = 'revoked' WHERE id = ?").run(id).changes === 1;
  }

  reset(id: number): boolean {
    return this.db.query("UPDATE enrollment_keys SET status = 'pending', client_uuid = NULL WHERE id = ?").run(id).changes === 1;
  }

  deleteKey(id: number): boolean {
    return this.db.query("DELETE FROM enrollment_keys WHERE id = ?").run(id).changes === 1;
  }

  /**
   * Of these (client, key it was admitted with) pairs, the clients whose key is gone or no
   * longer active for them. Goes by the key id each connection was admitted with, not by
   * clients.key_id: deleting a key sets that to NULL (ON DELETE SET NULL), which would hide it.
   */
  revokedBindings(bound: { uuid: string; keyId: number }[]): string[] {
    if (bound.length === 0) return [];
    return this.db
      .query<{ uuid: string }, [string]>(
        `SELECT j.value ->> '$.uuid' AS uuid FROM json_each(?) j
         LEFT JOIN enrollment_keys k ON k.id = j.value ->> '$.keyId'
         WHERE k.id IS NULL OR k.status <> 'active' OR k.client_uuid IS NOT j.value ->> '$.uuid'`,
      )
      .all(JSON.stringify(bound))
      .map((r) => r.uuid);
  }

  // Clients

  client(uuid: string): ClientRow | null {
    return this.db.query<ClientRow, [string]>("SELECT * FROM clients WHERE uuid = ?").get(uuid);
  }

  upsertClient(c: {
    uuid: string;
    name: string;
    hostname: string;
    group: string | null;
    keyId: number | null;
    version: string;
    os: string;
    address: string | null;
    now: number;
  }): void {
    this.db
      .query(
        `INSERT INTO clients (uuid, name, hostname, client_group, key_id, version, os, address, first_seen_at, last_seen_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, hostname = excluded.hostname,
           client_group = coalesce(excluded.client_group, clients.client_group), key_id = coalesce(excluded.key_id, clients.key_id),
           version = excluded.version, os = excluded.os, address = excluded.address, last_seen_at = excluded.last_seen_at`,
      )
      .run(c.uuid, c.name, c.hostname, c.group, c.keyId, c.version, c.os, c.address, c.now, c.now);
  }

  touchClient(uuid: string, now: number): void {
    this.db.query("UPDATE clients SET last_seen_at = ? WHERE uuid = ?").run(now, uuid);
  }

  private clientWhere(filter: ClientFilter): { sql: string; params: (string | number)[] } {
    const clauses: string[] = [];
    const params: (string | number)[] = [];
    if (filter.group !== undefined) (clauses.push("client_group = ?"), params.push(filter.group));
    groupClause("client_group", filter.groups, clauses, params);
    if (filter.uuids !== undefined) (clauses.push("uuid IN (SELECT value FROM json_each(?))"), params.push(JSON.stringify(filter.uuids)));
    if (filter.excludeUuids !== undefined)
      (clauses.push("uuid NOT IN (SELECT value FROM json_each(?))"), params.push(JSON.stringify(filter.excludeUuids)));
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  clients(filter: ClientFilter, limit: number, offset: number): ClientRow[] {
    const { sql, params } = this.clientWhere(filter);
    return this.db
      .query<ClientRow, (string | number)[]>(`SELECT * FROM clients ${sql} ORDER BY name, uuid LIMIT ? OFFSET ?`)
      .all(...params, limit, offset);
  }

  countClients(filter: ClientFilter): number {
    const { sql, params } = this.clientWhere(filter);
    return this.db.query<{ n: number }, (string | number)[]>(`SELECT count(*) AS n FROM clients ${sql}`).get(...params)!.n;
  }

  deleteClient(uuid: string): boolean {
    return this.db.query("DELETE FROM clients WHERE uuid = ?").run(uuid).changes === 1;
  }

  /** Revokes the keys bound to a client (when the client is deleted). */
  revokeKeysOf(uuid: string): number[] {
    return this.db
      .query<{ id: number }, [string]>(
        "UPDATE enrollment_keys SET status = 'revoked' WHERE client_uuid = ? AND status = 'active' RETURNING id",
      )
      .all(uuid)
      .map((r) => r.id);
  }
}
