import { randomBytes } from "node:crypto";
import { AuditStore } from "../db/audit.ts";
import type { Storage } from "../db/storage.ts";
import { NodeStore } from "../db/nodes.ts";
import { ThrottleStore } from "../db/throttles.ts";
import { ExchangeStore } from "../db/exchanges.ts";
import { NodeLease } from "./nodes.ts";
import { SessionStore } from "../db/sessions.ts";
import { SettingsStore } from "../db/settings.ts";
import { StatsStore } from "../db/stats.ts";
import { UserStore } from "../db/users.ts";
import { Accounts } from "./accounts.ts";
import { Audit } from "./audit.ts";
import { Authenticator, type LoginLimits } from "./auth.ts";
import { systemClock, type Clock } from "./clock.ts";
import { EventHub } from "./events.ts";
import { Metrics } from "./metrics.ts";
import { Sessions } from "./sessions.ts";
import { Stats } from "./stats.ts";
import { LicenseStore } from "../db/licenses.ts";
import { EnrollmentStore } from "../db/enrollment.ts";
import { Enrollment } from "./enrollment/index.ts";
import { ClientCertificates } from "./enrollment/certificates.ts";
import { CertificateStore } from "../db/certificates.ts";
import { CertificateAuthority } from "./ca/authority.ts";
import { clientCertificateVerifier, type CertificateVerifier } from "./ca/verify.ts";
import { Hosts } from "./hosts.ts";
import { UserCertificateStore } from "../db/user-certificates.ts";
import { UserCertificates } from "./user-certificates.ts";
import { Licensing } from "./licensing/index.ts";
import { newSigningKeyPem, signingKeyFromPem } from "./receipts.ts";

export interface ServiceOptions {
  sessionIdleSeconds: number;
  sessionAbsoluteSeconds: number;
  legacyChallengeLogin: boolean;
  receiptTtlSeconds?: number;
  receiptGraceSeconds?: number;
  /** How often hosts report: a host is online while its last report is within 3 intervals. */
  reportIntervalSeconds?: number;
  /** Validity of the certificate an enrolling client gets (`client/csr`; 30 days unless given). */
  clientCertificateDays?: number;
  /** Login throttles and queues (tests shrink them); the defaults suit production. */
  loginLimits?: LoginLimits;
  clock?: Clock;
  /** How long this node's lease on its clients lasts without renewal (15 s unless said). */
  nodeLeaseSeconds?: number;
  /** Background writes that failed (a session's last use, say); the next request retries them. */
  onBackgroundError?: (error: unknown) => void;
}

/** Everything the HTTP and RPC layers call into, built over one database. */
export interface Services {
  /** The database, SQLite or PostgreSQL, behind one interface. */
  storage: Storage;
  clock: Clock;
  events: EventHub;
  metrics: Metrics;
  /** Hourly roll-ups for the charts (`/api/stats`), counted as events happen. */
  stats: Stats;
  settings: SettingsStore;
  audit: Audit;
  sessions: Sessions;
  accounts: Accounts;
  auth: Authenticator;
  licensing: Licensing;
  enrollment: Enrollment;
  /** The built-in CA: its root (made by the server's first start), issued certificates, the CRL. */
  ca: CertificateAuthority;
  /** Registered hosts (woodstock) and their latest reports. */
  hosts: Hosts;
  /** The certificates enrolled clients request (`client/csr`), revoked with the client's identity. */
  clientCertificates: ClientCertificates;
  /** Certificates registered for users' certificate login (`rpc/auth_ssl`, `rpc/settings`). */
  userCertificates: UserCertificates;
  /** Client certificates, verified against the CA's root (each once, cached by its DER's SHA-256). */
  verifier: () => Promise<CertificateVerifier>;
  /** Server-wide secret (random, stored once) for decoys and CSRF tokens. */
  secret: Uint8Array;
  /** This node's lease on the clients it holds (several nodes share one database). */
  lease: NodeLease;
}

export async function createServices(storage: Storage, options: ServiceOptions): Promise<Services> {
  const db = storage.sql;
  const clock = options.clock ?? systemClock;
  const events = new EventHub();
  const metrics = new Metrics();
  const stats = new Stats(new StatsStore(db), clock);
  const settings = new SettingsStore(db);
  const secret = Buffer.from(await settings.getOrInit("server_secret", () => randomBytes(32).toString("base64")), "base64");
  const audit = new Audit(new AuditStore(db), clock);
  const sessions = new Sessions(
    new SessionStore(db),
    clock,
    events,
    { idleSeconds: options.sessionIdleSeconds, absoluteSeconds: options.sessionAbsoluteSeconds },
    { otherWriters: storage.watchOtherWriters(), onError: options.onBackgroundError ?? (() => undefined) },
  );
  const throttleStore = new ThrottleStore(db);
  const accounts = new Accounts(db, new UserStore(db), sessions, audit, events, settings, clock);
  const auth = new Authenticator(accounts, sessions, audit, metrics, stats, events, clock, secret, {
    legacyChallengeLogin: options.legacyChallengeLogin,
    limits: options.loginLimits,
    // Made below, once the CA they are checked against exists; asked only when a login runs.
    certificateKeys: { match: (message, proof) => userCertificates.match(message, proof) },
    shared: { sql: db, store: throttleStore, exchanges: new ExchangeStore(db) },
    ...(options.onBackgroundError ? { onError: options.onBackgroundError } : {}),
  });
  // The receipt signing key is made once and kept in the database, so backups carry it.
  const signingKey = signingKeyFromPem(await settings.getOrInit("license_signing_key", newSigningKeyPem));
  const licensing = new Licensing(
    db,
    new LicenseStore(db),
    audit,
    events,
    clock,
    signingKey,
    {
      receiptTtlSeconds: options.receiptTtlSeconds ?? 7 * 24 * 3600,
      receiptGraceSeconds: options.receiptGraceSeconds ?? 3 * 24 * 3600,
      otherWriters: storage.watchOtherWriters(),
      throttles: {
        sql: db,
        store: throttleStore,
        tell: (news) => events.emit("throttles.crossed", news),
        onError: options.onBackgroundError ?? (() => undefined),
      },
    },
    stats,
  );
  const enrollmentStore = new EnrollmentStore(db);
  const nodes = new NodeStore(db);
  const enrollment = new Enrollment(db, enrollmentStore, settings, audit, events, clock, stats, { nodes, nodeId: storage.nodeId });
  // Leases run on the real clock: they say which processes are alive, whatever the service clock says.
  const lease = new NodeLease(nodes, storage.nodeId, systemClock, { leaseMs: (options.nodeLeaseSeconds ?? 15) * 1000 });
  const certificates = new CertificateStore(db);
  const ca = new CertificateAuthority(db, certificates, audit, events, clock);
  const hosts = new Hosts(db, certificates, ca, audit, clock, {
    reportIntervalSeconds: options.reportIntervalSeconds ?? 60,
    events,
    metrics,
    stats,
    otherWriters: storage.watchOtherWriters(),
    ...(options.onBackgroundError ? { onReportError: options.onBackgroundError } : {}),
  });
  const clientCertificates = new ClientCertificates(enrollmentStore, hosts, ca, { days: options.clientCertificateDays ?? 30 });
  // A client that loses the right to be connected loses its certificates: its key revoked, reset
  // or deleted, the client deleted, its host removed (in this process, or seen from another one).
  // A revocation that is written stands even if the CRL rebuild after it fails (the CRL is rebuilt
  // when next read); a failure is recorded where an operator looks: the audit log and the server log.
  events.on("clients.kick", ({ uuids, keyId, actor }) => {
    const by = actor ?? { name: "system", address: null };
    clientCertificates.revokeOnKick(by, uuids, keyId).catch((error: unknown) =>
      audit
        .record({
          actor: by.name,
          address: by.address,
          action: "cert.revoke",
          target: uuids.join(", "),
          outcome: "failure",
          reason: error instanceof Error ? error.message : String(error),
        })
        .catch((auditError: unknown) => options.onBackgroundError?.(auditError)),
    );
  });
  // One verifier per root: an imported root gets a fresh cache.
  const verifier = async () => clientCertificateVerifier([await ca.caPem()]);
  const userCertificates = new UserCertificates(new UserCertificateStore(db), accounts, ca, verifier, audit, clock);
  return {
    storage,
    clock,
    events,
    metrics,
    stats,
    settings,
    audit,
    sessions,
    accounts,
    auth,
    licensing,
    enrollment,
    ca,
    hosts,
    clientCertificates,
    userCertificates,
    verifier,
    secret,
    lease,
  };
}
