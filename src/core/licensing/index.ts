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
import type { Database } from "bun:sqlite";
import type { LicenseFilter, LicenseStore } from "../../db/licenses.ts";
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
import { ReceiptIssuer, type ReceiptOptions } from "./receipt-issuer.ts";
import type { ActivateOutcome, AddressSource, CheckOutcome, DeactivateOutcome, WireRequest } from "./wire.ts";

export type { ActivationView, AppView, LicenseView };
export type {
  ActivateOutcome,
  AddressSource,
  CheckFailed,
  CheckOutcome,
  CheckPassed,
  DeactivateOutcome,
  Throttled,
  WireRequest,
} from "./wire.ts";

export class Licensing {
  private readonly apps: Apps;
  private readonly keys: LicenseKeys;
  private readonly machines: Activations;
  private readonly counters: CheckCounters;
  private readonly receipts: ReceiptIssuer;

  constructor(
    db: Database,
    private readonly store: LicenseStore,
    audit: Audit,
    events: EventHub,
    clock: Clock,
    signingKey: SigningKey,
    options: ReceiptOptions,
    private readonly stats: Stats,
  ) {
    const cache = new CheckCache(store);
    this.counters = new CheckCounters(db, store, stats);
    this.receipts = new ReceiptIssuer(signingKey, options);
    this.apps = new Apps(db, store, audit, clock, cache);
    this.keys = new LicenseKeys(store, audit, events, clock, cache, this.counters);
    this.machines = new Activations(db, store, audit, events, clock, cache, this.counters, this.receipts, stats);
  }

  /** Starts writing check counters about once a second. */
  start(): void {
    this.counters.start();
  }

  /** Stops the counter timer and writes what is left. */
  stop(): void {
    this.counters.stop();
  }

  /** Writes every batched check counter now. */
  flush(): void {
    this.counters.flush();
  }

  // The public calls (the seed's wire API)

  activate(request: WireRequest, address: string | null): ActivateOutcome {
    return this.machines.activate(request, address);
  }

  check(request: WireRequest, address: AddressSource): CheckOutcome {
    return this.machines.check(request, address);
  }

  deactivate(request: WireRequest, address: string | null): DeactivateOutcome {
    return this.machines.deactivate(request, address);
  }

  publicKey(): { algorithm: "EdDSA"; key_id: string; public_key: string } {
    return this.receipts.publicKey();
  }

  // Applications

  createApp(actor: Actor, input: { name: string; supportMessage: string }): AppView {
    return this.apps.create(actor, input);
  }

  listApps(limit: number, offset: number): { items: AppView[]; total: number } {
    return this.apps.list(limit, offset);
  }

  getApp(id: number): AppView {
    return this.apps.get(id);
  }

  updateApp(actor: Actor, id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): AppView {
    return this.apps.update(actor, id, changes);
  }

  deleteApp(actor: Actor, id: number): void {
    this.apps.delete(actor, id);
  }

  // License keys and their activations

  createLicense(actor: Actor, input: { appId: number; activations: number; memo: string; expiresAt: number | null }): LicenseView {
    return this.keys.create(actor, input);
  }

  listLicenses(filter: LicenseFilter, limit: number, offset: number, reveal: boolean): { items: LicenseView[]; total: number } {
    return this.keys.list(filter, limit, offset, reveal);
  }

  getLicense(id: number, reveal: boolean): LicenseView {
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
  ): LicenseView {
    return this.keys.update(actor, id, changes);
  }

  deleteLicense(actor: Actor, id: number): void {
    this.keys.delete(actor, id);
  }

  activations(id: number): { items: ActivationView[]; total: number } {
    return this.machines.list(id);
  }

  removeActivation(actor: Actor, id: number, hwid: string): void {
    this.machines.remove(actor, id, hwid);
  }

  // Charts

  /** A key's checks and activations over `range` (stats.ts). */
  licenseStats(id: number, range: StatsRange): StatsView<LicensingMetric> {
    requireLicense(this.store, id);
    return this.stats.licensing(licenseScope(id), range);
  }

  /** The checks and activations of an application's keys over `range`. */
  appStats(id: number, range: StatsRange): StatsView<LicensingMetric> {
    requireApp(this.store, id);
    return this.stats.licensing(appScope(id), range);
  }
}
