/**
 * Hosts allowed to report over mTLS (woodstock seed, SPEC §5): registered by an admin (or by client
 * enrollment), given a certificate bundle (`<hostname>_https.key/.pem` + `rootCA.pem`), and
 * recording their periodic reports. Hostnames are case-insensitive in DNS: they are validated as
 * RFC 1123 names and kept lower-case, in the table and in the certificates' CN.
 */
import type { Database } from "bun:sqlite";
import * as v from "valibot";
import type { CertificateStore, HostWithCertificate } from "../db/certificates.ts";
import { DataVersion } from "../db/data-version.ts";
import { immediateUnsynced } from "../db/open.ts";
import type { Actor } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { CertificateAuthority } from "./ca/authority.ts";
import type { Clock } from "./clock.ts";
import { badRequest, conflict, notFound } from "./errors.ts";
import type { EventHub } from "./events.ts";
import { group as groupSchema, hostname as hostnameSchema, isoTime } from "./fields.ts";
import type { Metrics } from "./metrics.ts";
import type { Principal } from "./sessions.ts";
import { groupScope, type Stats } from "./stats.ts";

/** What a host sends to `POST /api/hosts/{hostname}/client` (validated by the route's schema). */
export interface HostReport {
  interfaces: { name: string; addresses: string[] }[];
  port: number;
  version: string;
}

export interface HostView {
  hostname: string;
  group: string | null;
  created_at: string;
  created_by: string;
  /** Reported within three report intervals. */
  online: boolean;
  last_report_at: string | null;
  last_address: string | null;
  report: HostReport | null;
  /** Its latest valid certificate from the current root. */
  certificate: { serial: string; not_after: string } | null;
}

/** The files a woodstock-style client needs: its key and certificate, and the root to trust. */
export interface HostBundle {
  key: string;
  certificate: string;
  ca: string;
  serial: string;
  not_after: string;
}

/**
 * A bundle's files under the names a woodstock client loads from its configuration directory:
 * `<hostname>_https.key`, `<hostname>_https.pem` and `rootCA.pem`.
 */
export function woodstockFiles(hostname: string, bundle: HostBundle): Record<string, string> {
  return { [`${hostname}_https.key`]: bundle.key, [`${hostname}_https.pem`]: bundle.certificate, "rootCA.pem": bundle.ca };
}

/** A host's reports are pushed (`hosts.changed`, `reported`) at most this often: hosts report every minute, and many at once. */
export const REPORT_PUSH_INTERVAL_MS = 10_000;

export interface HostOptions {
  /** How often hosts report (60 s unless given); a host is online while its last report is within three intervals. */
  reportIntervalSeconds?: number;
  /** Validity of a bundle's certificate (365 unless given): outside clients do not renew their own. */
  bundleDays?: number;
  /** Where `hosts.changed` pushes go (nowhere unless given). */
  events?: EventHub;
  /** Where the `latchkey_hosts` and `latchkey_certificates` gauges are registered (nowhere unless given). */
  metrics?: Metrics;
  /** Where reports are counted for the charts (nowhere unless given). */
  stats?: Stats;
}

/** A hostname as latchkey keeps it (lower-case); bad_request when it is not an RFC 1123 name. */
export function normalizeHostname(input: string): string {
  const parsed = v.safeParse(hostnameSchema, input);
  if (!parsed.success) throw badRequest(parsed.issues[0].message, "hostname");
  return parsed.output.toLowerCase();
}

export class Hosts {
  private readonly onlineMs: number;
  private readonly bundleDays: number;
  private readonly events: EventHub | null;
  /** When each host's last report was pushed, for the throttle. */
  private readonly reportPushedAt = new Map<string, number>();
  /**
   * Reports not yet written, by host: the latest of each is written about once a second in one
   * transaction without an fsync (a report is soon sent again; a crash may lose the last second's),
   * and before anything reads hosts, so that every view is current.
   */
  private readonly pendingReports = new Map<string, { report: string; at: number; address: string | null }>();
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  /** Registered hostnames with their groups: asked on every report; dropped on changes here and in other processes. */
  private registered: Map<string, string | null> | null = null;
  private readonly otherWriters: DataVersion;
  private readonly stats: Stats | null;

  constructor(
    private readonly db: Database,
    private readonly store: CertificateStore,
    private readonly ca: CertificateAuthority,
    private readonly audit: Audit,
    private readonly clock: Clock,
    options: HostOptions = {},
  ) {
    this.onlineMs = 3 * (options.reportIntervalSeconds ?? 60) * 1000;
    this.bundleDays = options.bundleDays ?? 365;
    this.events = options.events ?? null;
    this.stats = options.stats ?? null;
    this.otherWriters = new DataVersion(() => this.store.dataVersion());
    options.metrics?.labelledGauge("latchkey_hosts", "state", () => this.countByState());
    options.metrics?.labelledGauge("latchkey_certificates", "state", () => this.certificatesByState());
  }

  registerHost(actor: Actor, hostname: string, group: string | null): HostView {
    const name = normalizeHostname(hostname);
    if (group !== null && !v.safeParse(groupSchema, group).success) throw badRequest("is not a valid group name", "group");
    if (!this.store.insertHost({ hostname: name, group, createdBy: actor.name, now: this.clock() })) {
      this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "host.register",
        target: name,
        outcome: "failure",
        reason: "exists",
      });
      throw conflict(`host ${name} is already registered`, "hostname");
    }
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "host.register",
      target: name,
      outcome: "success",
      reason: group,
    });
    this.registered?.set(name, group);
    this.changed(name, group, "registered");
    return this.view(this.store.host(name, this.clock())!);
  }

  /**
   * Registers the host a client enrolls as (`client/csr`), in the client's group, unless it is
   * registered already (by an admin, or by another client of the same name): then it stays as it is.
   */
  enrollHost(actor: Actor, hostname: string, group: string | null): void {
    const name = normalizeHostname(hostname);
    if (this.store.hostRow(name)) return;
    if (!this.store.insertHost({ hostname: name, group, createdBy: actor.name, now: this.clock() })) return;
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "host.register",
      target: name,
      outcome: "success",
      reason: group === null ? "enrolled" : `enrolled, group ${group}`,
    });
    this.registered?.set(name, group);
    this.changed(name, group, "registered");
  }

  /**
   * Removes a host and revokes its certificates, in one transaction; clients enrolled as it are
   * disconnected (one whose key is still good may enroll again, and registers the host anew).
   */
  async removeHost(actor: Actor, hostname: string): Promise<void> {
    const name = normalizeHostname(hostname);
    const row = this.store.hostRow(name);
    if (!row) throw notFound(`no host ${name}`);
    let removed = false;
    const revoked = await this.ca.revokeHostCertificates(actor, name, "cessationOfOperation", () => {
      removed = this.store.deleteHost(name);
    });
    if (!removed) throw notFound(`no host ${name}`);
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "host.remove",
      target: name,
      outcome: "success",
      reason: revoked.serials.length ? `revoked ${revoked.serials.join(", ")}` : null,
    });
    // The clients enrolled as this host lose their certificates: their sockets close on both listeners.
    if (revoked.clients.length > 0) this.events?.emit("clients.kick", { uuids: revoked.clients, reason: "the host was removed", actor });
    this.reportPushedAt.delete(name);
    this.registered?.delete(name);
    this.pendingReports.delete(name);
    this.changed(name, row.host_group, "removed");
  }

  /** A page of hosts by name; viewers see only those of their groups. */
  listHosts(
    viewer: Principal | null,
    filter: { group?: string | undefined; status?: "online" | "offline" | undefined },
    limit: number,
    offset: number,
  ): { items: HostView[]; total: number } {
    this.flushReports();
    const now = this.clock();
    const since = now - this.onlineMs;
    const scoped = {
      group: filter.group,
      groups: viewer === null || viewer.role === "admin" ? undefined : viewer.groups,
      ...(filter.status === "online" ? { reportedSince: since } : filter.status === "offline" ? { notReportedSince: since } : {}),
    };
    return { items: this.store.hosts(scoped, now, limit, offset).map((h) => this.view(h)), total: this.store.countHosts(scoped) };
  }

  getHost(viewer: Principal | null, hostname: string): HostView {
    const name = normalizeHostname(hostname);
    this.flushReports();
    const host = this.store.host(name, this.clock());
    const group = host?.host_group ?? null;
    const visible = viewer === null || viewer.role === "admin" || (group !== null && viewer.groups.includes(group));
    if (!host || !visible) throw notFound(`no host ${name}`);
    return this.view(host);
  }

  /** Whether a hostname (a certificate's CN) is registered: the mTLS listener's 401 test, per report. */
  isRegistered(hostname: string): boolean {
    if (this.otherWriters.changed()) this.registered = null;
    this.registered ??= this.store.hostGroups();
    return this.registered.has(hostname.toLowerCase());
  }

  /**
   * Issues a bundle for an outside client: a clientAuth certificate with CN and SAN = the hostname
   * and a freshly generated key, with the root. The key is in the reply only. Earlier bundles stay
   * valid until revoked or the host is removed.
   */
  async hostBundle(actor: Actor, hostname: string): Promise<HostBundle> {
    const name = normalizeHostname(hostname);
    if (!this.store.hostRow(name)) throw notFound(`no host ${name}; register it first`);
    const issued = await this.ca.issue(actor, {
      kind: "host",
      commonName: name,
      sans: [name],
      usages: ["clientAuth"],
      days: this.bundleDays,
      key: "generate",
      hostname: name,
    });
    return {
      key: issued.key!,
      certificate: issued.pem,
      ca: this.ca.caPem(),
      serial: issued.certificate.serial,
      not_after: issued.certificate.not_after,
    };
  }

  /**
   * Stores a host's latest report (not audited: hosts report every minute); not_found when it is
   * not registered. Pushed as `reported` at most once per host every REPORT_PUSH_INTERVAL_MS.
   */
  recordReport(hostname: string, report: HostReport, address: string | null): void {
    const name = normalizeHostname(hostname);
    const now = this.clock();
    if (!this.isRegistered(name)) throw notFound(`no host ${name}`);
    this.pendingReports.set(name, { report: JSON.stringify(report), at: now, address });
    const group = this.registered?.get(name) ?? null;
    this.stats?.count("host_reports", 1, group === null ? [] : [groupScope(group)], now);
    if (this.flushTimer === null) {
      this.flushTimer = setTimeout(() => this.flushReports(), 1000);
      this.flushTimer.unref?.();
    }
    const pushed = this.reportPushedAt.get(name);
    if (this.events && (pushed === undefined || now - pushed >= REPORT_PUSH_INTERVAL_MS)) {
      this.reportPushedAt.set(name, now);
      this.changed(name, this.store.hostRow(name)?.host_group ?? null, "reported");
    }
  }

  /** Writes the reports received since the last time (see `pendingReports`). */
  flushReports(): void {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.pendingReports.size === 0) return;
    const reports = [...this.pendingReports];
    this.pendingReports.clear();
    immediateUnsynced(this.db, () => {
      // A host removed meanwhile matches no row: its report goes with it.
      for (const [name, r] of reports) this.store.recordReport(name, r.report, r.address, r.at);
    });
  }

  /** Hosts by online state, for the `latchkey_hosts` gauge. */
  countByState(): { online: number; offline: number } {
    this.flushReports();
    const since = this.clock() - this.onlineMs;
    return { online: this.store.countHosts({ reportedSince: since }), offline: this.store.countHosts({ notReportedSince: since }) };
  }

  /**
   * Certificates by state, for the `latchkey_certificates` gauge: `revoked`, `expired` (not revoked,
   * past not_after) and `valid` (neither). Every certificate not revoked is of the current root: a
   * root's import revokes those of the one it replaces.
   */
  certificatesByState(): { valid: number; revoked: number; expired: number } {
    const root = this.store.currentRoot();
    const inUse = root ? Object.values(this.store.inUseOfRoot(root.id, this.clock())).reduce((sum, n) => sum + n, 0) : 0;
    const notRevoked = this.store.countCertificates({ status: "valid" });
    return { valid: inUse, revoked: this.store.countCertificates({ status: "revoked" }), expired: notRevoked - inUse };
  }

  /** Viewers of the host's group hear of it; admins of every host. */
  private changed(hostname: string, group: string | null, change: "registered" | "removed" | "reported"): void {
    this.events?.emit("push", { topic: "hosts.changed", args: { hostname, change }, groups: group === null ? [] : [group] });
  }

  private view(h: HostWithCertificate): HostView {
    return {
      hostname: h.hostname,
      group: h.host_group,
      created_at: isoTime(h.created_at),
      created_by: h.created_by,
      online: h.last_report_at !== null && this.clock() - h.last_report_at <= this.onlineMs,
      last_report_at: isoTime(h.last_report_at),
      last_address: h.last_address,
      report: h.report === null ? null : (JSON.parse(h.report) as HostReport),
      certificate: h.certificate_serial === null ? null : { serial: h.certificate_serial, not_after: isoTime(h.certificate_not_after!) },
    };
  }
}
