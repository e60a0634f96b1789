/** The shapes the panel reads from the server's JSON API. */

export type Role = "admin" | "viewer";
export const ROLES: readonly Role[] = ["admin", "viewer"];

/** `GET /api/auth/session` */
export interface SessionInfo {
  username: string;
  role: Role;
  allowed_groups: string[];
  expires_in: number;
  csrf_token?: string;
}

/** `POST /api/auth/login` */
export interface LoginReply {
  role: Role;
  expires_in: number;
  csrf_token?: string;
}

export interface Paged<T> {
  items: T[];
  total: number;
}

export interface User {
  username: string;
  role: Role;
  allowed_groups: string[];
  created_at: string;
  last_login_at: string | null;
  password_changed_at: string;
  /** Imported from wsauth and still verified through its legacy hash. */
  legacy: boolean;
  /** Keeps the wsauth hash for the opt-in challenge login. */
  legacy_challenge: boolean;
}

export type Outcome = "success" | "failure" | "denied";

export interface AuditEntry {
  id: number;
  at: string;
  actor: string | null;
  address: string | null;
  action: string;
  target: string | null;
  outcome: Outcome;
  reason: string | null;
}

/** `GET /healthz` */
export interface Health {
  status: string;
  database: string;
  version: string;
}
