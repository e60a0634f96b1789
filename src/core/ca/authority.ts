/**
 * The built-in certificate authority (SPEC §5, §9): one root, generated on first start or imported;
 * the certificates it issues, as a signing policy says; revocation and the CRL; the mTLS listener's
 * own certificate. The root's key is read from the store only to build the signer: no method
 * returns it, and it goes to no log, audit entry or event. `x509.ts` does the X.509 work,
 * `db/certificates.ts` holds the SQL.
 */
import { X509Certificate, type KeyObject } from "node:crypto";
import { hostname as osHostname } from "node:os";
import * as v from "valibot";
import type {
  CertificateFilter,
  CertificateKind,
  CertificateRow,
  CertificateStatus,
  CertificateStore,
  CrlRow,
  PublicRootRow,
  ServerCertificateRow,
} from "../../db/certificates.ts";
import type { Sql } from "../../db/sql.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { AppError, badRequest, conflict, notFound } from "../errors.ts";
import type { EventHub } from "../events.ts";
import { hostname as hostnameSchema, isoTime } from "../fields.ts";
import type { Principal } from "../sessions.ts";
import {
  CaSigner,
  certificatePem,
  checkCaImport,
  colonFingerprint,
  createRootCertificate,
  crlPem,
  describePublicKey,
  fingerprint,
  generateKeyPair,
  normalizeFingerprint,
  normalizeSerial,
  parseSans,
  readCertificate,
  REVOCATION_REASONS,
  type BuiltCertificate,
  type ExtendedUsage,
  type RevocationReason,
} from "./x509.ts";

export type { CertificateKind, CertificateStatus } from "../../db/certificates.ts";
export { REVOCATION_REASONS, type ExtendedUsage, type RevocationReason } from "./x509.ts";

export const CERTIFICATE_KINDS: readonly CertificateKind[] = ["server", "host", "client", "user"];
const DAY_MS = 86_400_000;
const SYSTEM: Actor = { name: "system", address: null };

/**
 * What may be issued (STYLE "Policy as data"): the caller's authorization decides the policy, the
 * CA enforces it. serverAuth is for `server` certificates only (SPEC §9).
 */
export interface IssuePolicy {
  kind: CertificateKind;
  commonName: string;
  /** DNS names and IP addresses (v4, v6). */
  sans?: readonly string[];
  usages: readonly ExtendedUsage[];
  /** 1 to 3650; the certificate never outlives the root. */
  days: number;
  /**
   * The subject's public key (SubjectPublicKeyInfo DER), or `generate` for a fresh P-256 key pair
   * whose private key is returned once and never stored.
   */
  key: { spki: Uint8Array } | "generate";
  /** The registered host it belongs to (revoked with it); it must be registered when the certificate is recorded. */
  hostname?: string | null;
  /**
   * The enrolled client it is issued to (`client/csr`): revoked with the client's identity. A
   * client keeps at most `CLIENT_CERTIFICATES_KEPT` valid certificates: issuing another revokes
   * the oldest (superseded), so that renewals never pile up.
   */
  clientUuid?: string | null;
}

/** Valid certificates a client keeps: the newest, and the one it may still be connected with while it renews. */
export const CLIENT_CERTIFICATES_KEPT = 2;

export interface CertificateView {
  serial: string;
  fingerprint: string;
  kind: CertificateKind;
  common_name: string;
  sans: string[];
  usages: ExtendedUsage[];
  hostname: string | null;
  client_uuid: string | null;
  not_before: string;
  not_after: string;
  status: CertificateStatus;
  expired: boolean;
  /** Issued by the current root; a certificate of a replaced root no longer verifies. */
  current_root: boolean;
  revoked_at: string | null;
  revocation_reason: string | null;
  created_at: string;
  created_by: string;
}

/** Certificates revoked together, and the enrolled clients they had been issued to. */
export interface RevokedSet {
  serials: string[];
  clients: string[];
}

export interface IssuedCertificate {
  certificate: CertificateView;
  pem: string;
  /** The generated private key (PKCS#8 PEM), when the policy asked for one: shown this once, stored nowhere. */
  key?: string;
}

export interface RootView {
  fingerprint: string;
  /** The fingerprint as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint_colon: string;
  serial: string;
  common_name: string | null;
  organization: string | null;
  not_before: string;
  not_after: string;
  source: "generated" | "imported";
  created_at: string;
  created_by: string;
  certificate: string;
}

/** The mTLS listener's certificate and key, with the root to verify client certificates against. */
export interface ServerCertificate {
  certificate: string;
  key: string;
  ca: string;
  serial: string;
  sans: string[];
  not_after: string;
}

export interface CrlView {
  der: Uint8Array;
  pem: string;
  number: number;
  this_update: string;
  next_update: string;
}

export interface CertificateAuthorityOptions {
  /** The O of a root latchkey generates ("latchkey" unless given). */
  organization?: string;
  /** The machine's name for the listener's certificate (`os.hostname()` unless given). */
  machineHostname?: () => string;
  /** The listener certificate's validity (365 unless given). */
  serverCertificateDays?: number;
  /** A CRL's nextUpdate after its thisUpdate (7 unless given). */
  crlValidityDays?: number;
  /** A CRL is rebuilt this long before its nextUpdate (1 day unless given). */
  crlRefreshMs?: number;
}

interface Prepared {
  rootId: number;
  built: BuiltCertificate;
  row: Omit<CertificateRow, "status" | "revoked_at" | "revocation_reason">;
  key?: string;
}

export class CertificateAuthority {
  private readonly organization: string;
  private readonly machineHostname: () => string;
  private readonly serverDays: number;
  private readonly crlValidityMs: number;
  private readonly crlRefreshMs: number;
  /** The signer of the current root, loaded once per root (the key is imported as non-extractable). */
  private signerCache: { rootId: number; signer: Promise<CaSigner> } | null = null;
  private rootKeyCache: { rootId: number; key: KeyObject; notBefore: number; notAfter: number } | null = null;
  /** CRL builds run one at a time in this process; a build waiting to start is shared by everyone who asks meanwhile. */
  private crlRunning: Promise<unknown> = Promise.resolve();
  private crlWaiting: Promise<CrlRow> | null = null;

  constructor(
    private readonly sql: Sql,
    private readonly store: CertificateStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
    options: CertificateAuthorityOptions = {},
  ) {
    this.organization = options.organization ?? "latchkey";
    this.machineHostname = options.machineHostname ?? osHostname;
    this.serverDays = options.serverCertificateDays ?? 365;
    this.crlValidityMs = (options.crlValidityDays ?? 7) * DAY_MS;
    this.crlRefreshMs = options.crlRefreshMs ?? DAY_MS;
  }

  // The root

  /**
   * The current root, created on first start: ECDSA P-256, ten years. The candidate is built
   * outside the database (WebCrypto is asynchronous), then stored by one insert that does nothing
   * when a root is current already (the database allows one): of processes starting at once, one
   * stores its root and every one of them reads that winner back.
   */
  async ensureRoot(): Promise<RootView> {
    const current = await this.store.currentRoot();
    if (current) return rootView(current);
    const now = this.clock();
    const built = await createRootCertificate({ organization: this.organization, now: new Date(now) });
    const stored = await this.store.insertRoot({
      certificatePem: built.pem,
      keyPem: built.keyPem,
      fingerprint: built.info.fingerprint,
      source: "generated",
      createdBy: SYSTEM.name,
      now,
    });
    if (stored !== null) {
      await this.audit.record({
        actor: SYSTEM.name,
        address: null,
        action: "ca.generate",
        target: built.info.fingerprint,
        outcome: "success",
      });
    }
    return rootView((await this.store.currentRoot())!);
  }

  /**
   * Replaces the root with an imported one (`rootCA.pem` and its key; see `checkCaImport` for
   * what is refused and why). Certificates issued by the old root stop verifying, since clients
   * and the mTLS listener trust one root: so the import is refused (conflict) while the current
   * root has certificates in use (valid and unexpired) other than the listener's own, unless
   * `force` is given. Either way every still-valid certificate of the old root is marked revoked
   * (reason superseded, their connections told to close), the old root is retired and its key
   * erased (it never signs again; its certificate stays on record), and the new root gets its CRL.
   * The listener's certificate is re-issued by the next `serverCertificate()` call: the caller
   * must call it and reload the listener. Importing the current root again changes nothing.
   */
  async importRoot(actor: Actor, certificatePem: string, keyPem: string, options: { force?: boolean } = {}): Promise<RootView> {
    const now = this.clock();
    let fingerprint: string;
    let outcome: { replaced: string | null; revoked: string[] } | null;
    try {
      const checked = await checkCaImport(certificatePem, keyPem, new Date(now));
      fingerprint = checked.info.fingerprint;
      outcome = await this.sql.transaction(() => this.replaceRoot(actor, checked, options.force === true, now));
    } catch (error) {
      // Refusals are audited with what the caller is told; nothing of the key is in them.
      const reason = error instanceof AppError ? `${error.field ?? ""} ${error.message}`.trim() : "unreadable";
      await this.audit.record({ actor: actor.name, address: actor.address, action: "ca.import", target: null, outcome: "failure", reason });
      throw error;
    }
    if (outcome === null) return rootView((await this.store.currentRoot())!);
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "ca.import",
      target: fingerprint,
      outcome: "success",
      reason: outcome.replaced ? `replaced ${outcome.replaced}; revoked ${outcome.revoked.length} certificates` : null,
    });
    if (outcome.revoked.length) this.announceRevocation(outcome.revoked, null, null);
    await this.regenerateCrl();
    return rootView((await this.store.currentRoot())!);
  }

  /**
   * The import's transaction: null when this root is already the current one. The old root is
   * retired first: on PostgreSQL that waits for transactions recording a certificate of it (they
   * hold its row, see `record`), so that the count and the revocation after it see every one of
   * them. A refusal throws, and the retirement is rolled back with the rest.
   */
  private async replaceRoot(
    actor: Actor,
    checked: { certificatePem: string; keyPem: string; info: { fingerprint: string } },
    force: boolean,
    now: number,
  ): Promise<{ replaced: string | null; revoked: string[] } | null> {
    const current = await this.store.currentRoot();
    if (current?.fingerprint === checked.info.fingerprint) return null;
    const changedMeanwhile = () => conflict("the root CA was changed by someone else meanwhile; look at it again and retry");
    let revoked: string[] = [];
    if (current) {
      if (!(await this.store.retireRoot(current.id, now))) throw changedMeanwhile();
      const others = Object.entries(await this.store.inUseOfRoot(current.id, now)).filter(([kind]) => kind !== "server");
      const count = others.reduce((sum, [, n]) => sum + n, 0);
      if (count > 0 && !force) {
        const detail = others.map(([kind, n]) => `${n} ${kind}`).join(", ");
        throw conflict(
          `the current root CA has ${count} certificates in use (${detail}), which stop working with a new root; ` +
            "revoke them (or remove their hosts) first, or import with force to revoke them all",
        );
      }
      revoked = await this.store.revokeOfRoot(current.id, "superseded", now);
    }
    const inserted = await this.store.insertRoot({
      certificatePem: checked.certificatePem,
      keyPem: checked.keyPem,
      fingerprint: checked.info.fingerprint,
      source: "imported",
      createdBy: actor.name,
      now,
    });
    if (inserted === null) throw changedMeanwhile();
    return { replaced: current?.fingerprint ?? null, revoked };
  }

  /** The current root; unavailable before `ensureRoot`. */
  async root(): Promise<RootView> {
    return rootView(await this.requireRoot());
  }

  /** The root certificate as PEM, as `GET /api/ca.pem` serves it. */
  async caPem(): Promise<string> {
    return (await this.requireRoot()).certificate_pem;
  }

  /** The SHA-256 fingerprint of the root, lowercase hex (what `-ca-fingerprint` pins). */
  async caFingerprint(): Promise<string> {
    return (await this.requireRoot()).fingerprint;
  }

  private async requireRoot(): Promise<PublicRootRow> {
    const root = await this.store.currentRoot();
    if (!root) throw new AppError("unavailable", "the certificate authority has no root yet; it is created when the server starts");
    return root;
  }

  private async signer(): Promise<{ rootId: number; signer: CaSigner }> {
    const root = await this.requireRoot();
    if (this.signerCache?.rootId !== root.id) {
      // The key is read and imported once per root, however many ask at once.
      const signer = this.store.currentRootKey(root.id).then((keyPem) => {
        if (keyPem === null) throw new AppError("unavailable", "the root CA was just replaced; try again");
        return CaSigner.load(root.certificate_pem, keyPem);
      });
      this.signerCache = { rootId: root.id, signer };
      signer.catch(() => {
        if (this.signerCache?.signer === signer) this.signerCache = null;
      });
    }
    return { rootId: root.id, signer: await this.signerCache!.signer };
  }

  // Issuing

  /** Issues and records a certificate as the policy says. */
  async issue(actor: Actor, policy: IssuePolicy): Promise<IssuedCertificate> {
    // A serial collision (127 random bits) or a root replaced mid-way is retried with a fresh build.
    for (let attempt = 0; attempt < 3; attempt++) {
      // Everything that takes time (a key pair, the signature) is done before the transaction.
      const prepared = await this.prepare(actor, policy);
      const recorded = await this.sql.transaction(async () => {
        const uuid = prepared.row.client_uuid;
        if (uuid !== null) await this.store.holdClient(uuid);
        if (!(await this.record(prepared))) return null;
        if (uuid === null) return { superseded: [] };
        const older = (await this.store.validOfClient(uuid, this.clock())).filter((c) => c.serial !== prepared.row.serial);
        const superseded = older.slice(CLIENT_CERTIFICATES_KEPT - 1).map((c) => c.serial);
        for (const serial of superseded) await this.store.revoke(serial, "superseded", this.clock());
        return { superseded };
      });
      if (!recorded) continue;
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "cert.issue",
        target: prepared.row.serial,
        outcome: "success",
        reason: `${policy.kind} CN=${prepared.row.common_name}${prepared.row.client_uuid ? ` client ${prepared.row.client_uuid}` : ""}`,
      });
      const groups = await this.groupsOf(prepared.row.hostname);
      if (recorded.superseded.length > 0) {
        await this.audit.record({
          actor: actor.name,
          address: actor.address,
          action: "cert.revoke",
          target: prepared.row.client_uuid,
          outcome: "success",
          reason: `superseded by ${prepared.row.serial}: ${recorded.superseded.join(", ")}`,
        });
        this.announceRevocation(recorded.superseded, prepared.row.hostname, groups);
        await this.regenerateCrl();
      }
      this.events.emit("push", {
        topic: "certificates.changed",
        args: { serials: [prepared.row.serial], change: "issued", ...(prepared.row.hostname ? { hostname: prepared.row.hostname } : {}) },
        groups,
      });
      const view = this.view((await this.store.certificate(prepared.row.serial))!, prepared.rootId);
      return { certificate: view, pem: prepared.built.pem, ...(prepared.key ? { key: prepared.key } : {}) };
    }
    throw new AppError("unavailable", "the certificate could not be recorded; try again");
  }

  /** Checks the policy and builds the certificate; nothing is stored yet. */
  private async prepare(actor: Actor, policy: IssuePolicy): Promise<Prepared> {
    if (!CERTIFICATE_KINDS.includes(policy.kind)) throw badRequest(`must be one of ${CERTIFICATE_KINDS.join(", ")}`, "kind");
    if (!Number.isInteger(policy.days) || policy.days < 1 || policy.days > 3650)
      throw badRequest("must be a whole number from 1 to 3650", "days");
    const usages = [...new Set(policy.usages)];
    if (usages.length === 0 || usages.some((u) => u !== "serverAuth" && u !== "clientAuth")) {
      throw badRequest("must be serverAuth, clientAuth or both", "usages");
    }
    if (usages.includes("serverAuth") && policy.kind !== "server") throw badRequest("serverAuth is only for server certificates", "usages");
    const { dnsNames, ipAddresses } = parseSans(policy.sans ?? []);
    let spki: Uint8Array;
    let key: string | undefined;
    if (policy.key === "generate") {
      const pair = await generateKeyPair();
      spki = pair.spki;
      key = pair.keyPem;
    } else {
      describePublicKey(policy.key.spki);
      spki = policy.key.spki;
    }
    const { rootId, signer } = await this.signer();
    const now = this.clock();
    const built = await signer.issue({
      commonName: policy.commonName,
      sans: [...dnsNames, ...ipAddresses],
      usages,
      publicKey: spki,
      now: new Date(now),
      days: policy.days,
    });
    const row = {
      serial: built.info.serial,
      ca_id: rootId,
      fingerprint: built.info.fingerprint,
      kind: policy.kind,
      common_name: policy.commonName,
      sans: JSON.stringify([...built.info.dnsNames, ...built.info.ipAddresses]),
      usages: JSON.stringify(usages),
      hostname: policy.hostname?.toLowerCase() ?? null,
      client_uuid: policy.clientUuid ?? null,
      der: built.der,
      not_before: built.info.notBefore.getTime(),
      not_after: built.info.notAfter.getTime(),
      created_at: now,
      created_by: actor.name,
    };
    return { rootId, built, row, ...(key ? { key } : {}) };
  }

  /**
   * Records a prepared certificate, in the caller's transaction; false when it must be built again
   * (its root was replaced meanwhile, or its serial is taken). The root and the host are held until
   * the transaction ends, so that an import or a removal running at once revokes it with the others
   * (see `CertificateStore.holdCurrentRoot`).
   */
  private async record(prepared: Prepared): Promise<boolean> {
    if (!(await this.store.holdCurrentRoot(prepared.rootId))) return false;
    const hostname = prepared.row.hostname;
    if (hostname !== null && !(await this.store.holdHost(hostname))) throw notFound(`no host ${hostname}; register it first`);
    return this.store.insertCertificate(prepared.row);
  }

  /**
   * The mTLS listener's certificate: serverAuth, SANs `localhost`, `127.0.0.1`, `::1`, the
   * machine's hostname and every name in `sans`. The stored one is reused while it comes from the
   * current root, is not revoked, has the same names and has more than a third of its life left;
   * otherwise a new one (one year, fresh key) replaces it. Its key is stored with it, so that every
   * node of the same name serves the same certificate.
   */
  async serverCertificate(options: { sans?: readonly string[] } = {}): Promise<ServerCertificate> {
    const machine = dnsName(this.machineHostname());
    const defaults = ["localhost", "127.0.0.1", "::1", ...(machine ? [machine] : [])];
    const { dnsNames, ipAddresses } = parseSans([...defaults, ...(options.sans ?? [])]);
    const sans = [...dnsNames.sort(), ...ipAddresses.sort()];
    const key = JSON.stringify(sans);
    const usable = (row: ServerCertificateRow | null, rootId: number, now: number) => {
      const lifetime = row ? row.not_after - row.not_before : 0;
      return row && row.ca_id === rootId && row.status === "valid" && row.not_after - now > lifetime / 3 ? row : null;
    };
    const root = await this.requireRoot();
    const existing = usable(await this.store.serverCertificate(key), root.id, this.clock());
    if (existing) return this.serverView(existing, root.certificate_pem);
    const prepared = await this.prepare(SYSTEM, {
      kind: "server",
      commonName: machine ?? "localhost",
      sans,
      usages: ["serverAuth"],
      days: this.serverDays,
      key: "generate",
    });
    // The stored one is replaced only if it is still the one this transaction read: of processes
    // doing this at once, one stores its certificate (the others' are rolled back) and all use it.
    const lost = new Error("another process stored the listener's certificate first");
    const winner = await this.sql
      .transaction(async () => {
        const stored = await this.store.serverCertificate(key);
        const again = usable(stored, prepared.rootId, this.clock());
        if (again) return again;
        if (!(await this.record(prepared))) return null;
        const saved = await this.store.saveServerCertificate(
          key,
          prepared.row.serial,
          prepared.key!,
          prepared.row.created_at,
          stored?.serial ?? null,
        );
        if (!saved) throw lost;
        return (await this.store.serverCertificate(key))!;
      })
      .catch(async (error: unknown) => {
        if (error !== lost) throw error;
        return usable(await this.store.serverCertificate(key), prepared.rootId, this.clock());
      });
    if (!winner) throw new AppError("unavailable", "the root CA changed while the server certificate was being issued; try again");
    const rootPem = (await this.requireRoot()).certificate_pem;
    if (winner.serial === prepared.row.serial) {
      await this.audit.record({
        actor: SYSTEM.name,
        address: null,
        action: "cert.issue",
        target: winner.serial,
        outcome: "success",
        reason: `server ${sans.join(",")}`,
      });
      this.events.emit("push", { topic: "certificates.changed", args: { serials: [winner.serial], change: "issued" }, groups: [] });
    }
    return this.serverView(winner, rootPem);
  }

  private serverView(
    row: { serial: string; key_pem: string; der: Uint8Array; sans: string; not_after: number },
    rootPem: string,
  ): ServerCertificate {
    return {
      certificate: certificatePem(row.der),
      key: row.key_pem,
      ca: rootPem,
      serial: row.serial,
      sans: JSON.parse(row.sans) as string[],
      not_after: isoTime(row.not_after),
    };
  }

  // Revoking

  /**
   * Revokes a valid certificate: one conditional UPDATE, so that of concurrent revocations exactly
   * one succeeds (the others get conflict); audited; connections it authenticated are told to close
   * (`certificates.revoked`); then the CRL is rebuilt. Should that rebuild fail, the revocation
   * stands and `crl()` rebuilds the stale CRL when it is next read.
   */
  async revoke(actor: Actor, serial: string, reason: RevocationReason): Promise<CertificateView> {
    const normalized = normalizeSerial(serial);
    if (normalized === null) throw badRequest("must be a serial number in hex", "serial");
    if (!REVOCATION_REASONS.includes(reason)) throw badRequest(`must be one of ${REVOCATION_REASONS.join(", ")}`, "reason");
    if (!(await this.store.revoke(normalized, reason, this.clock()))) {
      const row = await this.store.certificate(normalized);
      if (!row) throw notFound(`no certificate with serial ${normalized}`);
      throw conflict(`certificate ${normalized} is already revoked`);
    }
    const row = (await this.store.certificate(normalized))!;
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "cert.revoke",
      target: normalized,
      outcome: "success",
      reason,
    });
    this.announceRevocation([normalized], row.hostname, await this.groupsOf(row.hostname));
    await this.regenerateCrl();
    return this.view(row, (await this.store.currentRoot())?.id);
  }

  /**
   * Revokes every valid certificate of a host; `within` runs first in the same transaction
   * (removing the host, so that no certificate of it is issued in between and survives: on
   * PostgreSQL the removal waits for a transaction recording one, see `record`, and the revocation
   * after it then sees that one too). The serials revoked, and the clients they had been issued to.
   */
  async revokeHostCertificates(
    actor: Actor,
    hostname: string,
    reason: RevocationReason,
    within?: () => Promise<void>,
  ): Promise<RevokedSet> {
    const name = hostname.toLowerCase();
    const groups = await this.groupsOf(name);
    const rows = await this.sql.transaction(async () => {
      await within?.();
      return this.store.revokeOfHost(name, reason, this.clock());
    });
    const clients = [...new Set(rows.flatMap((r) => (r.client_uuid === null ? [] : [r.client_uuid])))];
    return this.revoked(actor, name, reason, { serials: rows.map((r) => r.serial), clients }, name, groups);
  }

  /** Revokes every valid certificate issued to an enrolled client (its key revoked or reset, the client deleted). */
  async revokeClientCertificates(actor: Actor, uuid: string, reason: RevocationReason): Promise<RevokedSet> {
    const serials = await this.store.revokeOfClient(uuid, reason, this.clock());
    if (serials.length === 0) return { serials, clients: [] };
    const hostname = (await this.store.certificate(serials[0]!))?.hostname ?? null;
    return this.revoked(actor, uuid, reason, { serials, clients: [uuid] }, hostname, await this.groupsOf(hostname));
  }

  /** After a revocation of many: audited, announced, and the CRL rebuilt. */
  private async revoked(
    actor: Actor,
    target: string,
    reason: RevocationReason,
    set: RevokedSet,
    hostname: string | null,
    groups: string[],
  ): Promise<RevokedSet> {
    if (set.serials.length === 0) return set;
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "cert.revoke",
      target,
      outcome: "success",
      reason: `${reason}: ${set.serials.join(", ")}`,
    });
    this.announceRevocation(set.serials, hostname, groups);
    await this.regenerateCrl();
    return set;
  }

  private announceRevocation(serials: string[], hostname: string | null, groups: string[] | null): void {
    this.events.emit("certificates.revoked", { serials });
    this.events.emit("push", {
      topic: "certificates.changed",
      args: { serials, change: "revoked", ...(hostname ? { hostname } : {}) },
      groups: groups ?? [],
    });
  }

  /** Viewers of the host's group see pushes about its certificates; admins see all. */
  private async groupsOf(hostname: string | null): Promise<string[]> {
    const group = hostname === null ? null : ((await this.store.hostRow(hostname))?.host_group ?? null);
    return group === null ? [] : [group];
  }

  // The CRL

  /**
   * The current root's CRL (DER and PEM). Rebuilt on read when there is none, when it is within
   * `crlRefreshMs` of its nextUpdate, or when a certificate was revoked since it was built (by this
   * process, or by another one on the same database).
   */
  async crl(): Promise<CrlView> {
    const root = await this.requireRoot();
    const row = await this.store.crl(root.id);
    return crlView(row && !(await this.crlStale(row)) ? row : await this.regenerateCrl());
  }

  /** Rebuilds the CRL if it is due (for a timer); whether it did. */
  async refreshCrlIfDue(): Promise<boolean> {
    const root = await this.store.currentRoot();
    if (!root) return false;
    const row = await this.store.crl(root.id);
    if (row && !(await this.crlStale(row))) return false;
    await this.regenerateCrl();
    return true;
  }

  private async crlStale(row: CrlRow): Promise<boolean> {
    return this.clock() >= row.next_update - this.crlRefreshMs || (await this.store.revokedCount(row.ca_id)) > row.revoked_count;
  }

  private regenerateCrl(): Promise<CrlRow> {
    if (this.crlWaiting) return this.crlWaiting;
    const build = this.crlRunning
      .catch(() => undefined)
      .then(() => {
        this.crlWaiting = null;
        return this.buildCrl();
      });
    this.crlWaiting = build;
    this.crlRunning = build;
    return build;
  }

  /**
   * Builds and stores a CRL from what the database holds now. Another process may have stored one
   * with the same or a higher number meanwhile: if it counted at least the revocations this one did
   * (the count only grows, so it was read after them), it stands; otherwise this one is built again,
   * numbered after it.
   */
  private async buildCrl(): Promise<CrlRow> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const { rootId, signer } = await this.signer();
      const now = this.clock();
      const contents = await this.store.crlContents(rootId, now);
      const nextUpdate = now + this.crlValidityMs;
      const { der } = await signer.crl({
        number: contents.number,
        thisUpdate: new Date(now),
        nextUpdate: new Date(nextUpdate),
        entries: contents.revoked.map((r) => ({
          serial: r.serial,
          revokedAt: new Date(r.revoked_at),
          reason: REVOCATION_REASONS.includes(r.revocation_reason as RevocationReason) ? (r.revocation_reason as RevocationReason) : null,
        })),
      });
      const row: CrlRow = {
        ca_id: rootId,
        number: contents.number,
        der,
        this_update: now,
        next_update: nextUpdate,
        revoked_count: contents.revokedCount,
      };
      if (await this.store.saveCrl(row)) return row;
      const stored = await this.store.crl(rootId);
      if (stored && stored.revoked_count >= row.revoked_count) return stored;
    }
    throw new AppError("unavailable", "the CRL is being rebuilt by another process; try again", { retryAfter: 1 });
  }

  // Reading

  /** A page of certificates, newest first; viewers see only those of hosts in their groups. */
  async list(
    viewer: Principal | null,
    filter: { kind?: CertificateKind | undefined; status?: CertificateStatus | undefined; hostname?: string | undefined },
    limit: number,
    offset: number,
  ): Promise<{ items: CertificateView[]; total: number }> {
    const scoped: CertificateFilter = {
      ...filter,
      hostname: filter.hostname?.toLowerCase(),
      groups: viewer === null || viewer.role === "admin" ? undefined : viewer.groups,
    };
    const rows = await this.store.certificates(scoped, limit, offset);
    const total = await this.store.countCertificates(scoped);
    const rootId = (await this.store.currentRoot())?.id;
    return { items: rows.map((row) => this.view(row, rootId)), total };
  }

  /** One certificate with its PEM; not_found for a viewer outside its host's group. */
  async get(viewer: Principal | null, serial: string): Promise<CertificateView & { pem: string }> {
    const normalized = normalizeSerial(serial);
    const row = normalized === null ? null : await this.store.certificate(normalized);
    if (!row || !(await this.visible(viewer, row))) throw notFound(`no certificate with serial ${normalized ?? serial}`);
    return { ...this.view(row, (await this.store.currentRoot())?.id), pem: certificatePem(row.der) };
  }

  /** The certificate with this SHA-256 fingerprint, if latchkey issued it (for checking a presented certificate's state). */
  async byFingerprint(fingerprint: string): Promise<CertificateView | null> {
    const normalized = normalizeFingerprint(fingerprint);
    const row = normalized === null ? null : await this.store.certificateByFingerprint(normalized);
    return row ? this.view(row, (await this.store.currentRoot())?.id) : null;
  }

  /** Of these SHA-256 fingerprints (lowercase hex), those of certificates latchkey issued and has revoked: one query for many. */
  revokedAmong(fingerprints: readonly string[]): Promise<Set<string>> {
    return this.store.revokedAmong(fingerprints);
  }

  /**
   * The issuance record of `der` when it is byte for byte a certificate the current root issued
   * (looked up by the SHA-256 of the DER) and its signature checks against the root with
   * node:crypto: what the verifier would conclude about the chain, at a fraction of PKIjs's cost
   * (SPEC §10: new mTLS connections with a cold certificate cache). Null for anything else, which
   * then goes through the verifier. Validity, usage and revocation are the caller's, from the row.
   */
  async issuedRecord(der: Uint8Array): Promise<CertificateRow | null> {
    const row = await this.store.certificateOfCurrentRoot(fingerprint(der));
    if (!row) return null;
    if (this.rootKeyCache?.rootId !== row.ca_id) {
      const root = await this.store.currentRoot();
      if (root?.id !== row.ca_id) return null;
      const certificate = new X509Certificate(root.certificate_pem);
      const [notBefore, notAfter] = [certificate.validFromDate.getTime(), certificate.validToDate.getTime()];
      this.rootKeyCache = { rootId: root.id, key: certificate.publicKey, notBefore, notAfter };
    }
    // Outside the root's own validity the verifier says why.
    const now = this.clock();
    if (now < this.rootKeyCache.notBefore || now > this.rootKeyCache.notAfter) return null;
    try {
      return new X509Certificate(der).verify(this.rootKeyCache.key) ? row : null;
    } catch {
      return null;
    }
  }

  private async visible(viewer: Principal | null, row: CertificateRow): Promise<boolean> {
    if (viewer === null || viewer.role === "admin") return true;
    const group = row.hostname === null ? null : ((await this.store.hostRow(row.hostname))?.host_group ?? null);
    return group !== null && viewer.groups.includes(group);
  }

  /** A certificate as callers see it; `currentRootId` tells whether it is of the current root. */
  private view(row: CertificateRow, currentRootId: number | undefined): CertificateView {
    return {
      serial: row.serial,
      fingerprint: row.fingerprint,
      kind: row.kind,
      common_name: row.common_name,
      sans: JSON.parse(row.sans) as string[],
      usages: JSON.parse(row.usages) as ExtendedUsage[],
      hostname: row.hostname,
      client_uuid: row.client_uuid,
      not_before: isoTime(row.not_before),
      not_after: isoTime(row.not_after),
      status: row.status,
      expired: this.clock() >= row.not_after,
      current_root: currentRootId === row.ca_id,
      revoked_at: isoTime(row.revoked_at),
      revocation_reason: row.revocation_reason,
      created_at: isoTime(row.created_at),
      created_by: row.created_by,
    };
  }
}

/** The machine's name in lower case, or null when it is not a DNS name (then it is left out of the listener's names). */
function dnsName(name: string): string | null {
  return v.safeParse(hostnameSchema, name).success ? name.toLowerCase() : null;
}

function rootView(row: PublicRootRow): RootView {
  const info = readCertificate(row.certificate_pem);
  return {
    fingerprint: row.fingerprint,
    fingerprint_colon: colonFingerprint(row.fingerprint),
    serial: info.serial,
    common_name: info.commonName,
    organization: info.organization,
    not_before: info.notBefore.toISOString(),
    not_after: info.notAfter.toISOString(),
    source: row.source,
    created_at: isoTime(row.created_at),
    created_by: row.created_by,
    certificate: row.certificate_pem,
  };
}

function crlView(row: CrlRow): CrlView {
  return {
    der: row.der,
    pem: crlPem(row.der),
    number: row.number,
    this_update: isoTime(row.this_update),
    next_update: isoTime(row.next_update),
  };
}
