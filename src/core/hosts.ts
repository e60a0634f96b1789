/**
 * Hosts allowed to report over mTLS (woodstock seed, SPEC §5): registered by an admin (or by client
 * enrollment), given a certificate bundle (`<hostname>_https.key/.pem` + `rootCA.pem`), and
 * recording their periodic reports. Hostnames are case-insensitive in DNS: they are validated as
 * RFC 1123 names and kept lower-case, in the table and in the certificates' CN.
 */
import * as v from "valibot";
import type { CertificateStore, HostWithCertificate } from "../db/certificates.ts";
import type { Sql } from "../db/sql.ts";
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
  /**
   * A watcher of other processes' commits (`Storage.watchOtherWriters()`, a watcher of its own):
   * true when anyone else has written since it last said so. Registered hosts are cached and
   * read again when it says so, so that a host added or removed by the CLI or another node counts
   * at once.
   */
  otherWriters: () => boolean;
  /** Where a failure to write the batched reports goes (they are kept and tried again); stderr unless given. */
  onReportError?: (error: unknown) => void;
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
  /**
   * The writes of batches taken so far, one after the other (so that an older report never lands
   * after a newer one); never rejects (a failed batch's reports go back to `pendingReports`).
   */
  private flushing: Promise<void> = Promise.resolve();
  /** Registered hostnames with their groups: asked on every report; dropped on changes here and in other processes. */
  private registered: Map<string, string | null> | null = null;
  /** The read of `registered` under way, shared by the reports that wait for it. */
  private loading: Promise<Map<string, string | null>> | null = null;
  /** Moves whenever `registered` is dropped or changed here: a read begun before that is not kept. */
  private registeredGeneration = 0;
  private readonly otherWriters: () => boolean;
  private readonly onReportError: (error: unknown) => void;
  private readonly stats: Stats | null;

  constructor(
    private readonly sql: Sql,
    private readonly store: CertificateStore,
    private readonly ca: CertificateAuthority,
    private readonly audit: Audit,
    private readonly clock: Clock,
    options: HostOptions,
  ) {
    this.onlineMs = 3 * (options.reportIntervalSeconds ?? 60) * 1000;
    this.bundleDays = options.bundleDays ?? 365;
    this.events = options.events ?? null;
    this.stats = options.stats ?? null;
    this.otherWriters = options.otherWriters;
    this.onReportError =
      options.onReportError ?? ((error) => process.stderr.write(`latchkey: writing host reports failed; retrying: ${String(error)}\n`));
    options.metrics?.labelledGauge("latchkey_hosts", "state", () => this.countByState());
    options.metrics?.labelledGauge("latchkey_certificates", "state", () => this.certificatesByState());
  }

  async registerHost(actor: Actor, hostname: string, group: string | null): Promise<HostView> {
    const name = normalizeHostname(hostname);
    if (group !== null && !v.safeParse(groupSchema, group).success) throw badRequest("is not a valid group name", "group");
    if (!(await this.store.insertHost({ hostname: name, group, createdBy: actor.name, now: this.clock() }))) {
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "host.register",
        target: name,
        outcome: "failure",
        reason: "exists",
      });
      throw conflict(`host ${name} is already registered`, "hostname");
    }
    this.noteRegistered(name, group);
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "host.register",
      target: name,
      outcome: "success",
      reason: group,
    });
    this.changed(name, group, "registered");
    return this.view((await this.store.host(name, this.clock()))!);
  }

  /**
   * Registers the host a client enrolls as (`client/csr`), in the client's group, unless it is
   * registered already (by an admin, or by another client of the same name): then it stays as it is.
   */
  async enrollHost(actor: Actor, hostname: string, group: string | null): Promise<void> {
    const name = normalizeHostname(hostname);
    if (await this.store.hostRow(name)) return;
    if (!(await this.store.insertHost({ hostname: name, group, createdBy: actor.name, now: this.clock() }))) return;
    this.noteRegistered(name, group);
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "host.register",
      target: name,
      outcome: "success",
      reason: group === null ? "enrolled" : `enrolled, group ${group}`,
    });
    this.changed(name, group, "registered");
  }

  /**
   * Removes a host and revokes its certificates, in one transaction; clients enrolled as it are
   * disconnected (one whose key is still good may enroll again, and registers the host anew).
   */
  async removeHost(actor: Actor, hostname: string): Promise<void> {
    const name = normalizeHostname(hostname);
    const row = await this.store.hostRow(name);
    if (!row) throw notFound(`no host ${name}`);
    let removed = false;
    const revoked = await this.ca.revokeHostCertificates(actor, name, "cessationOfOperation", async () => {
      removed = await this.store.deleteHost(name);
    });
    if (!removed) throw notFound(`no host ${name}`);
    this.noteRegistered(name, undefined);
    this.pendingReports.delete(name);
    await this.audit.record({
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
    this.changed(name, row.host_group, "removed");
  }

  /** A page of hosts by name; viewers see only those of their groups. */
  async listHosts(
    viewer: Principal | null,
    filter: { group?: string | undefined; status?: "online" | "offline" | undefined },
    limit: number,
    offset: number,
  ): Promise<{ items: HostView[]; total: number }> {
    await this.flushReports();
    const now = this.clock();
    const since = now - this.onlineMs;
    const scoped = {
      group: filter.group,
      groups: viewer === null || viewer.role === "admin" ? undefined : viewer.groups,
      ...(filter.status === "online" ? { reportedSince: since } : filter.status === "offline" ? { notReportedSince: since } : {}),
    };
    const rows = await this.store.hosts(scoped, now, limit, offset);
    return { items: rows.map((h) => this.view(h)), total: await this.store.countHosts(scoped) };
  }

  async getHost(viewer: Principal | null, hostname: string): Promise<HostView> {
    const name = normalizeHostname(hostname);
    await this.flushReports();
    const host = await this.store.host(name, this.clock());
    const group = host?.host_group ?? null;
    const visible = viewer === null || viewer.role === "admin" || (group !== null && viewer.groups.includes(group));
    if (!host || !visible) throw notFound(`no host ${name}`);
    return this.view(host);
  }

  /** Whether a hostname (a certificate's CN) is registered: the mTLS listener's 401 test, per report. */
  async isRegistered(hostname: string): Promise<boolean> {
    return (await this.registeredGroup(hostname.toLowerCase())) !== undefined;
  }

  /** The group of a registered host (null for none), or undefined when it is not registered. */
  private async registeredGroup(name: string): Promise<string | null | undefined> {
    const hosts = await this.registeredHosts();
    if (hosts.has(name)) return hosts.get(name)!;
    // Registered since by another process whose write has not been signalled yet? The database says.
    const row = await this.store.hostRow(name);
    if (row === null) return undefined;
    if (this.registered === hosts) hosts.set(name, row.host_group);
    return row.host_group;
  }

  /** The registered hosts with their groups: from memory unless another process wrote since they were read. */
  private registeredHosts(): Map<string, string | null> | Promise<Map<string, string | null>> {
    if (this.otherWriters()) this.forgetRegistered();
    if (this.registered !== null) return this.registered;
    if (this.loading === null) {
      const generation = this.registeredGeneration;
      const loading = this.store.hostGroups().then((hosts) => {
        if (generation === this.registeredGeneration) this.registered = hosts;
        return hosts;
      });
      this.loading = loading;
      const done = () => {
        if (this.loading === loading) this.loading = null;
      };
      loading.then(done, done);
    }
    return this.loading;
  }

  private forgetRegistered(): void {
    this.registered = null;
    this.loading = null;
    this.registeredGeneration++;
  }

  /** A host registered (with its group) or removed (undefined) here. */
  private noteRegistered(name: string, group: string | null | undefined): void {
    if (this.registered === null) {
      // A read under way may have missed it.
      this.forgetRegistered();
      return;
    }
    this.registeredGeneration++;
    if (group === undefined) this.registered.delete(name);
    else this.registered.set(name, group);
  }

  /**
   * Issues a bundle for an outside client: a clientAuth certificate with CN and SAN = the hostname
   * and a freshly generated key, with the root. The key is in the reply only. Earlier bundles stay
   * valid until revoked or the host is removed.
   */
  async hostBundle(actor: Actor, hostname: string): Promise<HostBundle> {
    const name = normalizeHostname(hostname);
    if (!(await this.store.hostRow(name))) throw notFound(`no host ${name}; register it first`);
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
      ca: await this.ca.caPem(),
      serial: issued.certificate.serial,
      not_after: issued.certificate.not_after,
    };
  }

  /**
   * Stores a host's latest report (not audited: hosts report every minute); not_found when it is
   * not registered. Pushed as `reported` at most once per host every REPORT_PUSH_INTERVAL_MS.
   */
  async recordReport(hostname: string, report: HostReport, address: string | null): Promise<void> {
    const name = normalizeHostname(hostname);
    const now = this.clock();
    const group = await this.registeredGroup(name);
    if (group === undefined) throw notFound(`no host ${name}`);
    this.pendingReports.set(name, { report: JSON.stringify(report), at: now, address });
    this.stats?.count("host_reports", 1, group === null ? [] : [groupScope(group)], now);
    this.scheduleFlush();
    const pushed = this.reportPushedAt.get(name);
    if (this.events && (pushed === undefined || now - pushed >= REPORT_PUSH_INTERVAL_MS)) {
      this.reportPushedAt.set(name, now);
      this.changed(name, group, "reported");
    }
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = setTimeout(() => void this.flushReports().catch(this.onReportError), 1000);
    this.flushTimer.unref?.();
  }

  /**
   * Writes the reports received since the last time (see `pendingReports`) in one transaction
   * whose commit does not wait for the disk, after any write of earlier ones; resolves once they
   * (and those earlier ones) are written. Should the write fail, its reports are kept (unless a
   * newer one came meanwhile) for the next try, and the returned promise rejects.
   */
  flushReports(): Promise<void> {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.pendingReports.size === 0) return this.flushing;
    const reports = [...this.pendingReports];
    this.pendingReports.clear();
    const write = this.flushing.then(() =>
      this.sql
        .transaction(
          async () => {
            // A host removed meanwhile matches no row: its report goes with it.
            for (const [name, r] of reports) await this.store.recordReport(name, r.report, r.address, r.at);
          },
          { durable: false },
        )
        .catch((error: unknown) => {
          for (const [name, r] of reports) if (!this.pendingReports.has(name)) this.pendingReports.set(name, r);
          this.scheduleFlush();
          throw error;
        }),
    );
    this.flushing = write.catch(() => undefined);
    return write;
  }

  /** Hosts by online state, for the `latchkey_hosts` gauge. */
  async countByState(): Promise<{ online: number; offline: number }> {
    await this.flushReports();
    const since = this.clock() - this.onlineMs;
    const online = await this.store.countHosts({ reportedSince: since });
    return { online, offline: await this.store.countHosts({ notReportedSince: since }) };
  }

  /**
   * Certificates by state, for the `latchkey_certificates` gauge: `revoked`, `expired` (not revoked,
   * past not_after) and `valid` (neither). Every certificate not revoked is of the current root: a
   * root's import revokes those of the one it replaces.
   */
  async certificatesByState(): Promise<{ valid: number; revoked: number; expired: number }> {
    const root = await this.store.currentRoot();
    const inUse = root ? Object.values(await this.store.inUseOfRoot(root.id, this.clock())).reduce((sum, n) => sum + n, 0) : 0;
    const notRevoked = await this.store.countCertificates({ status: "valid" });
    return { valid: inUse, revoked: await this.store.countCertificates({ status: "revoked" }), expired: notRevoked - inUse };
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
