import type { Database } from "bun:sqlite";

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

type Params = (string | number)[];

const WITH_OWNER = "SELECT c.*, u.username FROM user_certificates c JOIN users u ON u.id = c.user_id";

/** Queries over `user_certificates`. */
export class UserCertificateStore {
  constructor(private readonly db: Database) {}

  /** Records a registration; null when the key already has a live registration (for anyone). */
  insert(c: NewUserCertificate): number | null {
    const row = this.db
      .query<{ id: number }, (string | number | Uint8Array | null)[]>(
        `INSERT INTO user_certificates (user_id, pub_key, key_spki, key_id, key_md5, key_type, nickname, email, certificate,
           fingerprint, subject, issuer, not_before, not_after, self_signed, ca_serial, registered_at, registered_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
      )
      .get(
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
      );
    return row?.id ?? null;
  }

  byId(id: number): UserCertificateWithOwner | null {
    return this.db.query<UserCertificateWithOwner, [number]>(`${WITH_OWNER} WHERE c.id = ?`).get(id);
  }

  /** The live registration of a key, whoever it belongs to. */
  liveByKey(keyId: string): UserCertificateWithOwner | null {
    return this.db.query<UserCertificateWithOwner, [string]>(`${WITH_OWNER} WHERE c.key_id = ? AND c.revoked_at IS NULL`).get(keyId);
  }

  /** A user's live registration whose pub_key is this very string, or whose certificate has this fingerprint. */
  liveOfUser(userId: number, by: { pubKey: string } | { fingerprint: string } | { keyId: string }): UserCertificateWithOwner | null {
    const [column, value] =
      "pubKey" in by ? ["pub_key", by.pubKey] : "fingerprint" in by ? ["fingerprint", by.fingerprint] : ["key_id", by.keyId];
    return this.db
      .query<UserCertificateWithOwner, [number, string]>(`${WITH_OWNER} WHERE c.user_id = ? AND c.${column} = ? AND c.revoked_at IS NULL`)
      .get(userId, value);
  }

  /** Every live registration (for `auth_ssl`, which tries each key), with its owner. */
  live(userId?: number): UserCertificateWithOwner[] {
    if (userId === undefined) {
      return this.db.query<UserCertificateWithOwner, []>(`${WITH_OWNER} WHERE c.revoked_at IS NULL ORDER BY u.username, c.pub_key`).all();
    }
    return this.db
      .query<UserCertificateWithOwner, [number]>(
        `${WITH_OWNER} WHERE c.revoked_at IS NULL AND c.user_id = ? ORDER BY u.username, c.pub_key`,
      )
      .all(userId);
  }

  /** The keys of every live registration: what a certificate login tries its proof against. */
  liveKeys(): Pick<UserCertificateRow, "id" | "key_id" | "key_spki">[] {
    return this.db
      .query<Pick<UserCertificateRow, "id" | "key_id" | "key_spki">, []>(
        "SELECT id, key_id, key_spki FROM user_certificates WHERE revoked_at IS NULL",
      )
      .all();
  }

  /** Whether a registration is still live (checked again just before a certificate login creates its session). */
  isLive(id: number): boolean {
    return this.db.query("SELECT 1 FROM user_certificates WHERE id = ? AND revoked_at IS NULL").get(id) !== null;
  }

  private where(filter: UserCertificateFilter): { sql: string; params: Params } {
    const clauses: string[] = [];
    const params: Params = [];
    if (filter.userId !== undefined) (clauses.push("c.user_id = ?"), params.push(filter.userId));
    if (filter.status === "active") clauses.push("c.revoked_at IS NULL");
    if (filter.status === "revoked") clauses.push("c.revoked_at IS NOT NULL");
    return { sql: clauses.length ? `WHERE ${clauses.join(" AND ")}` : "", params };
  }

  /** A page of registrations, live ones first, then newest first. */
  list(filter: UserCertificateFilter, limit: number, offset: number): UserCertificateWithOwner[] {
    const { sql, params } = this.where(filter);
    return this.db
      .query<UserCertificateWithOwner, Params>(
        `${WITH_OWNER} ${sql} ORDER BY c.revoked_at IS NOT NULL, c.registered_at DESC, c.id DESC LIMIT ? OFFSET ?`,
      )
      .all(...params, limit, offset);
  }

  count(filter: UserCertificateFilter): number {
    const { sql, params } = this.where(filter);
    return this.db.query<{ n: number }, Params>(`SELECT count(*) AS n FROM user_certificates c ${sql}`).get(...params)!.n;
  }

  /** The one-time transition live → revoked: of concurrent revocations exactly one changes the row. */
  revoke(id: number, by: string, now: number): boolean {
    return (
      this.db.query("UPDATE user_certificates SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL").run(now, by, id)
        .changes === 1
    );
  }
}
