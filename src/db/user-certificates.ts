import type { Param, Sql } from "./sql.ts";

/** A certificate registered for a user's certificate login (`rpc/auth_ssl`). */
export interface UserCertificateRow {
  id: number;
  user_id: number;
  pub_key: string;
  key_spki: Uint8Array;
  key_id: string;
  key_md5: string;
  key_type: string;
  nickname: string;
  email: string;
  certificate: Uint8Array | null;
  fingerprint: string | null;
  subject: string | null;
  issuer: string | null;
  not_before: number | null;
  not_after: number | null;
  self_signed: 0 | 1;
  ca_serial: string | null;
  registered_at: number;
  registered_by: string;
  revoked_at: number | null;
  revoked_by: string | null;
}

/** A registration with the name of the account it belongs to. */
export interface UserCertificateWithOwner extends UserCertificateRow {
  username: string;
}

export type NewUserCertificate = Omit<UserCertificateRow, "id" | "revoked_at" | "revoked_by">;

export interface UserCertificateFilter {
  userId?: number | undefined;
  status?: "active" | "revoked" | undefined;
}

const WITH_OWNER = "SELECT c.*, u.username FROM user_certificates c JOIN users u ON u.id = c.user_id";

/** By username, then by the key as given, in byte order on both (PostgreSQL would otherwise sort by the database's locale). */
const LIVE_ORDER = { sqlite: "ORDER BY u.username, c.pub_key", postgres: 'ORDER BY u.username COLLATE "C", c.pub_key COLLATE "C"' };

/** Queries over `user_certificates`. */
export class UserCertificateStore {
  constructor(private readonly sql: Sql) {}

  /** Records a registration; null when the key already has a live registration (for anyone). */
  async insert(c: NewUserCertificate): Promise<number | null> {
    const row = await this.sql.get<{ id: number }>(
      `INSERT INTO user_certificates (user_id, pub_key, key_spki, key_id, key_md5, key_type, nickname, email, certificate,
         fingerprint, subject, issuer, not_before, not_after, self_signed, ca_serial, registered_at, registered_by)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      [
        c.user_id,
        c.pub_key,
        c.key_spki,
        c.key_id,
        c.key_md5,
        c.key_type,
        c.nickname,
        c.email,
        c.certificate,
        c.fingerprint,
        c.subject,
        c.issuer,
        c.not_before,
        c.not_after,
        c.self_signed,
        c.ca_serial,
        c.registered_at,
        c.registered_by,
      ],
    );
    return row?.id ?? null;
  }

  byId(id: number): Promise<UserCertificateWithOwner | null> {
    return this.sql.get<UserCertificateWithOwner>(`${WITH_OWNER} WHERE c.id = ?`, [id]);
  }

  /** The live registration of a key, whoever it belongs to. */
  liveByKey(keyId: string): Promise<UserCertificateWithOwner | null> {
    return this.sql.get<UserCertificateWithOwner>(`${WITH_OWNER} WHERE c.key_id = ? AND c.revoked_at IS NULL`, [keyId]);
  }

  /** A user's live registration whose pub_key is this very string, or whose certificate has this fingerprint. */
  liveOfUser(
    userId: number,
    by: { pubKey: string } | { fingerprint: string } | { keyId: string },
  ): Promise<UserCertificateWithOwner | null> {
    const [column, value] =
      "pubKey" in by ? ["pub_key", by.pubKey] : "fingerprint" in by ? ["fingerprint", by.fingerprint] : ["key_id", by.keyId];
    return this.sql.get<UserCertificateWithOwner>(`${WITH_OWNER} WHERE c.user_id = ? AND c.${column} = ? AND c.revoked_at IS NULL`, [
      userId,
      value,
    ]);
  }

  /** Every live registration (for `auth_ssl`, which tries each key), with its owner. */
  live(userId?: number): Promise<UserCertificateWithOwner[]> {
    const order = LIVE_ORDER[this.sql.dialect];
    if (userId === undefined) return this.sql.all<UserCertificateWithOwner>(`${WITH_OWNER} WHERE c.revoked_at IS NULL ${order}`);
    return this.sql.all<UserCertificateWithOwner>(`${WITH_OWNER} WHERE c.revoked_at IS NULL AND c.user_id = ? ${order}`, [userId]);
  }

  /** The keys of every live registration: what a certificate login tries its proof against. */
  liveKeys(): Promise<Pick<UserCertificateRow, "id" | "key_id" | "key_spki">[]> {
    return this.sql.all<Pick<UserCertificateRow, "id" | "key_id" | "key_spki">>(
      "SELECT id, key_id, key_spki FROM user_certificates WHERE revoked_at IS NULL",
    );
  }

  /** Whether a registration is still live (checked again just before a certificate login creates its session). */
  async isLive(id: number): Promise<boolean> {
    return (await this.sql.get("SELECT 1 AS live FROM user_certificates WHERE id = ? AND revoked_at IS NULL", [id])) !== null;
  }

  private where(filter: UserCertificateFilter): { sql: string; params: Param[] } {
    const clauses: string[] = [];
    const params: Param[] = [];
    if (filter.userId !== undefined) (clauses.push("c.user_id = ?"), params.push(filter.userId));
    if (filter.status === "active") clauses.push("c.revoked_at IS NULL");
    if (filter.status === "revoked") clauses.push("c.revoked_at IS NOT NULL");
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  /** A page of registrations, live ones first, then newest first. */
  list(filter: UserCertificateFilter, limit: number, offset: number): Promise<UserCertificateWithOwner[]> {
    const { sql, params } = this.where(filter);
    return this.sql.all<UserCertificateWithOwner>(
      `${WITH_OWNER} ${sql}
       ORDER BY CASE WHEN c.revoked_at IS NULL THEN 0 ELSE 1 END, c.registered_at DESC, c.id DESC LIMIT ? OFFSET ?`,
      [...params, limit, offset],
    );
  }

  async count(filter: UserCertificateFilter): Promise<number> {
    const { sql, params } = this.where(filter);
    return (await this.sql.get<{ n: number }>(`SELECT count(*) AS n FROM user_certificates c ${sql}`, params))!.n;
  }

  /** The one-time transition live → revoked: of concurrent revocations exactly one changes the row. */
  async revoke(id: number, by: string, now: number): Promise<boolean> {
    const changed = await this.sql.run("UPDATE user_certificates SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL", [
      now,
      by,
      id,
    ]);
    return changed === 1;
  }
}
