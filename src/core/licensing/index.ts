/**
 * Software licensing (the mini-key-server seed, SPEC §6): applications, license keys, activations
 * per machine, and the public activate / check / deactivate calls with signed receipts.
 *
 *   apps.ts            applications
 *   keys.ts            license keys, their tokens
 *   activations.ts     the public calls, and admins' removal of activations
 *   check-cache.ts     what checks read from memory
 *   counters.ts        check counters, batched
 *   receipt-issuer.ts  signed receipts, and their reuse
 *   wire.ts            what the public calls take and the outcomes they return
 *
 * `Licensing` builds the parts over one database: it is what the HTTP, RPC and CLI layers call.
 */
import type { LicenseFilter, LicenseStore } from "../../db/licenses.ts";
import type { Sql } from "../../db/sql.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";
import type { SigningKey } from "../receipts.ts";
import { appScope, licenseScope, type LicensingMetric, type Stats, type StatsRange, type StatsView } from "../stats.ts";
import { Activations, type ActivationView } from "./activations.ts";
import { Apps, requireApp, type AppView } from "./apps.ts";
import { CheckCache } from "./check-cache.ts";
import { CheckCounters } from "./counters.ts";
import { LicenseKeys, requireLicense, type LicenseView } from "./keys.ts";
import type { ThrottleNews, ThrottleSharing } from "../shared-throttle.ts";
import { ReceiptIssuer, type ReceiptOptions } from "./receipt-issuer.ts";
import type { ActivateOutcome, AddressSource, CheckOutcome, DeactivateOutcome, MaybePromise, WireRequest } from "./wire.ts";

export type { ActivationView, AppView, LicenseView };
export type {
  ActivateOutcome,
  AddressSource,
  CheckFailed,
  CheckOutcome,
  CheckPassed,
  DeactivateOutcome,
  MaybePromise,
  Throttled,
  WireRequest,
} from "./wire.ts";

export interface LicensingOptions extends ReceiptOptions {
  /**
   * True when another process (the admin CLI, another server) has written to the database since
   * the last time it said so: the check cache is then dropped. Called before every check, so it
   * must be cheap (e.g. SQLite's data_version read at most every few milliseconds).
   */
  otherWriters: () => boolean;
  /** Where the licensing throttles count across the processes and nodes on the database. */
  throttles: ThrottleSharing;
}

export class Licensing {
  private readonly apps: Apps;
  private readonly keys: LicenseKeys;
  private readonly machines: Activations;
  private readonly counters: CheckCounters;
  private readonly receipts: ReceiptIssuer;

  constructor(
    sql: Sql,
    private readonly store: LicenseStore,
    audit: Audit,
    events: EventHub,
    clock: Clock,
    signingKey: SigningKey,
    options: LicensingOptions,
    private readonly stats: Stats,
  ) {
    const cache = new CheckCache(store, options.otherWriters);
    this.counters = new CheckCounters(sql, store, stats);
    this.receipts = new ReceiptIssuer(signingKey, options);
    this.apps = new Apps(sql, store, audit, clock, cache);
    this.keys = new LicenseKeys(store, audit, events, clock, cache, this.counters);
    this.machines = new Activations(sql, store, audit, events, clock, cache, this.counters, this.receipts, stats, options.throttles);
  }

  /** A licensing throttle's bucket another node told of (`throttles.crossed` there). */
  heardThrottle(news: ThrottleNews): void {
    this.machines.heardThrottle(news);
  }

  /** Starts writing check counters about once a second; a failed write goes to `onError` and is retried with the next. */
  start(onError: (error: unknown) => void): void {
    this.counters.start(onError);
  }

  /** Stops the counter timer and writes what is left. */
  stop(): Promise<void> {
    return this.counters.stop();
  }

  /** Writes every batched check counter now. */
  flush(): Promise<void> {
    return this.counters.flush();
  }

  // The public calls (the seed's wire API)

  activate(request: WireRequest, address: string | null): Promise<ActivateOutcome> {
    return this.machines.activate(request, address);
  }

  /** At once when the check cache holds what the check needs; a promise when the database must be read. */
  check(request: WireRequest, address: AddressSource): MaybePromise<CheckOutcome> {
    return this.machines.check(request, address);
  }

  deactivate(request: WireRequest, address: string | null): Promise<DeactivateOutcome> {
    return this.machines.deactivate(request, address);
  }

  publicKey(): { algorithm: "EdDSA"; key_id: string; public_key: string } {
    return this.receipts.publicKey();
  }

  // Applications

  createApp(actor: Actor, input: { name: string; supportMessage: string }): Promise<AppView> {
    return this.apps.create(actor, input);
  }

  listApps(limit: number, offset: number): Promise<{ items: AppView[]; total: number }> {
    return this.apps.list(limit, offset);
  }

  getApp(id: number): Promise<AppView> {
    return this.apps.get(id);
  }

  updateApp(actor: Actor, id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): Promise<AppView> {
    return this.apps.update(actor, id, changes);
  }

  deleteApp(actor: Actor, id: number): Promise<void> {
    return this.apps.delete(actor, id);
  }

  // License keys and their activations

  createLicense(actor: Actor, input: { appId: number; activations: number; memo: string; expiresAt: number | null }): Promise<LicenseView> {
    return this.keys.create(actor, input);
  }

  listLicenses(filter: LicenseFilter, limit: number, offset: number, reveal: boolean): Promise<{ items: LicenseView[]; total: number }> {
    return this.keys.list(filter, limit, offset, reveal);
  }

  getLicense(id: number, reveal: boolean): Promise<LicenseView> {
    return this.keys.get(id, reveal);
  }

  updateLicense(
    actor: Actor,
    id: number,
    changes: {
      enabled?: boolean | undefined;
      memo?: string | undefined;
      activations?: number | undefined;
      expiresAt?: number | null | undefined;
    },
  ): Promise<LicenseView> {
    return this.keys.update(actor, id, changes);
  }

  deleteLicense(actor: Actor, id: number): Promise<void> {
    return this.keys.delete(actor, id);
  }

  activations(id: number): Promise<{ items: ActivationView[]; total: number }> {
    return this.machines.list(id);
  }

  removeActivation(actor: Actor, id: number, hwid: string): Promise<void> {
    return this.machines.remove(actor, id, hwid);
  }

  // Charts

  /** A key's checks and activations over `range` (stats.ts). */
  async licenseStats(id: number, range: StatsRange): Promise<StatsView<LicensingMetric>> {
    await requireLicense(this.store, id);
    return this.stats.licensing(licenseScope(id), range);
  }

  /** The checks and activations of an application's keys over `range`. */
  async appStats(id: number, range: StatsRange): Promise<StatsView<LicensingMetric>> {
    await requireApp(this.store, id);
    return this.stats.licensing(appScope(id), range);
  }
}
