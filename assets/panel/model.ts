/**
 * The shapes the panel reads from the server's JSON API. Where the server has the type, it is
 * imported (type-only, erased from the bundle) so that the two cannot drift apart.
 */
import type { UserView } from "../../src/core/accounts.ts";
import type { AuditView } from "../../src/core/audit.ts";
import type { Role } from "../../src/db/users.ts";

export type { Role };
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

export type User = UserView;

export type AuditEntry = AuditView;
export type Outcome = AuditView["outcome"];

/** `GET /healthz` */
export interface Health {
  status: string;
  database: string;
  version: string;
}
