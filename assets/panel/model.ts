/**
 * The shapes the panel reads from the server's JSON API. Where the server has the type, it is
 * imported (type-only, erased from the bundle) so that the two cannot drift apart.
 */
import type { UserView } from "../../src/core/accounts.ts";
import type { AuditView } from "../../src/core/audit.ts";
import type { CertificateKind, CertificateView, RevocationReason, RootView } from "../../src/core/ca/authority.ts";
import type { ClientView, KeyList, KeyView } from "../../src/core/enrollment/index.ts";
import type { HostBundle, HostView } from "../../src/core/hosts.ts";
import type { ActivationView, AppView, LicenseView } from "../../src/core/licensing/index.ts";
import type { LicensingMetric, Metric, StatsRange, StatsView } from "../../src/core/stats.ts";
import type { UserCertificateView } from "../../src/core/user-certificates.ts";
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

/** `GET /api/apps`: the list carries each application's number of license keys. */
export type Application = AppView;
/** `GET /api/licenses`: the token is masked for viewers. */
export type License = LicenseView;
/** `GET /api/licenses/{id}/activations`: one activated machine. */
export type Activation = ActivationView;

/** `GET /api/settings` */
export interface Settings {
  require_auth_key: boolean;
}

/** `GET /api/keys`: a pre-shared enrollment key; masked for viewers. */
export type EnrollmentKey = KeyView;
/** `GET /api/keys`: a page of keys, and the caller's keys by state. */
export type { KeyList };
export type KeyStatus = KeyView["status"];
/** `GET /api/clients`: an enrolled client machine. */
export type Client = ClientView;

/** `GET /api/hosts`: a machine that reports over mutual TLS, with its latest report and certificate. */
export type Host = HostView;
/** `POST /api/hosts/{hostname}/bundle`: the private key is in this reply only. */
export type HostBundleReply = HostBundle & {
  hostname: string;
  /** The same PEMs under the woodstock file names: `<hostname>_https.key`, `<hostname>_https.pem`, `rootCA.pem`. */
  files: Record<string, string>;
};
/** `GET /api/certs`: a certificate the built-in CA issued. */
export type Certificate = CertificateView;
/** `GET /api/ca`: the root CA (never its key). */
export type RootCertificate = RootView;
export type { CertificateKind, RevocationReason };

/** `GET /api/me/certificates`, `GET /api/user-certificates`: a certificate a user signs in with (`rpc/auth_ssl`). */
export type UserCertificate = UserCertificateView;

export type { StatsRange };
/** `GET /api/stats`: the dashboard's series, one value per bucket (null: a series the caller may not see). */
export type Stats = StatsView<Metric>;
/** `GET /api/licenses/{id}/stats`, `GET /api/apps/{id}/stats`: checks and activations over time. */
export type LicensingStats = StatsView<LicensingMetric>;
