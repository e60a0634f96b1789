/**
 * Software licensing (mini-key-server seed): applications, license keys, activations per
 * machine, and the public activate / check / deactivate calls with signed receipts.
 */
import type { Database } from "bun:sqlite";
import { randomBytes } from "node:crypto";
import { DataVersion } from "../db/data-version.ts";
import { immediate, immediateUnsynced } from "../db/open.ts";
import type { ActivationRow, AppRow, LicenseFilter, LicenseRow, LicenseStore, LicenseWithApp } from "../db/licenses.ts";
import type { Actor } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { Clock } from "./clock.ts";
import { badRequest, conflict, notFound } from "./errors.ts";
import type { EventHub } from "./events.ts";
import type { Metrics } from "./metrics.ts";
import { signReceipt, type SigningKey } from "./receipts.ts";
import { Throttle } from "./throttle.ts";

const TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
export const TOKEN_LENGTH = 25;

/** 25 characters A-Z0-9 from a CSPRNG, drawn without modulo bias. */
export function newLicenseToken(): string {
  let out = "";
  const limit = 256 - (256 % TOKEN_ALPHABET.length);
  while (out.length < TOKEN_LENGTH) {
    for (const b of randomBytes(32)) {
      if (b < limit && out.length < TOKEN_LENGTH) out += TOKEN_ALPHABET[b % TOKEN_ALPHABET.length];
    }
  }
  return out;
}

export function hashLicenseToken(token: string): string {
  // Bun's one-shot SHA-256: the same digest as node:crypto, a third of the cost on the check path.
  return Bun.SHA256.hash(token, "hex");
}

/** What the public licensing calls take, from a form, a query string or JSON. */
export interface WireRequest {
  token: string;
  app_id?: number | undefined;
  machine?: string | undefined;
  user?: string | undefined;
  hwid?: string | undefined;
  nonce?: string | undefined;
}

/** A reply of the public licensing API: status and body exactly as the seed documents them. */
/** Read-only: a check's reply is cached and handed out again. */
export interface WireReply {
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>>;
  /** `body` already serialized, when it is cached (a check's reply with the machine's receipt). */
  readonly json?: string;
  readonly retryAfter?: number;
}

export interface AppView {
  id: number;
  name: string;
  support_message: string;
  created_at: string;
  licenses?: number;
}

export interface LicenseView {
  id: number;
  app_id: number;
  app_name: string;
  /** The full token for admins; masked for viewers. */
  token: string;
  activations: number;
  activations_used: number;
  /** -1 = unlimited. */
  remaining_activations: number;
  enabled: boolean;
  memo: string;
  expires_at: string | null;
  created_at: string;
  total_activations: number;
  total_checks: number;
  last_activation_at: string | null;
  last_activation_address: string | null;
  last_check_at: string | null;
  last_check_address: string | null;
}

export interface ActivationView {
  hwid: string;
  machine: string | null;
  user: string | null;
  address: string | null;
  activated_at: string;
  last_check_at: string | null;
}

export interface LicensingOptions {
  /** How long a receipt is valid, in seconds. */
  receiptTtlSeconds: number;
  /** How long past its expiry an application may keep running offline, in seconds. */
  receiptGraceSeconds: number;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function mask(token: string): string {
  return `${token.slice(0, 4)}${"•".repeat(token.length - 4)}`;
}

/** The first 48 bits of a SHA-256 digest, as a number: a Map key that costs no string. */
function tokenKey(digest: Uint8Array): number {
  return digest[0]! * 2 ** 40 + digest[1]! * 2 ** 32 + digest[2]! * 2 ** 24 + digest[3]! * 2 ** 16 + digest[4]! * 2 ** 8 + digest[5]!;
}

/** Constant-time comparison of two strings, without allocating (it runs on every check). */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

interface MachineCache {
  activationId: number | null;
  receipt: string | null;
  /** A check's 201 reply with that receipt, its JSON serialized once: the same object each time. */
  checkReply: WireReply | null;
  until: number;
}

/** A failed check's two replies, with one application's support message. */
interface CheckFailures {
  invalid: WireReply;
  expired: WireReply;
}

function failedCheck(status: number, error: string, supportMessage?: string): WireReply {
  const body = supportMessage === undefined ? { result: "failure", error } : { result: "failure", error, support_message: supportMessage };
  return { status, body, json: JSON.stringify(body) };
}

function checkFailures(supportMessage?: string): CheckFailures {
  return { invalid: failedCheck(404, "invalid key", supportMessage), expired: failedCheck(410, "key is no longer valid", supportMessage) };
}

/** A failed check without `app_id`: the seed's body exactly, the same for every caller. */
const SEED_CHECK_FAILURES = checkFailures();
/** A failed check whose `app_id` names no application: an empty message, as activate answers. */
const NO_APP_CHECK_FAILURES = checkFailures("");

interface PendingChecks {
  checks: number;
  at: number;
  address: string | null;
  /** The machine whose address `address` is. */
  hwid: string;
}

/**
 * The caller's address, or a way to read it: `check` reads it only when it needs it, since on a
 * server it costs a system call (getpeername) per request.
 */
export type AddressSource = string | null | (() => string | null);

export class Licensing {
  /** Check counters, batched in memory and written about once a second (SPEC §10 allows it). */
  private readonly pendingLicenses = new Map<number, PendingChecks>();
  private readonly pendingActivations = new Map<number, number>();
  /** Receipts without a nonce are reused for up to a minute, so a check costs no signature. */
  /** Per license, per machine: its activation id and its latest nonce-less receipt. */
  private readonly machines = new Map<number, Map<string, MachineCache>>();
  private cachedMachines = 0;
  /** Keyed by the first 48 bits of the token's SHA-256 (tokenKey): no hex string per check. */
  private readonly licenseCache = new Map<number, LicenseRow>();
  /**
   * A failed check's replies per application, for the ids of existing ones only: an id of no
   * application is looked up each time (a primary-key read), so that made-up ids cannot fill memory.
   */
  private readonly checkFailures = new Map<number, CheckFailures>();
  private readonly otherWriters: DataVersion;
  /** Where each check's token digest is written: one buffer, reused. */
  private readonly digest = new Uint8Array(32);
  private readonly invalidTokens: Throttle;
  private readonly seatFailures: Throttle;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly db: Database,
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly metrics: Metrics,
    private readonly clock: Clock,
    private readonly signingKey: SigningKey,
    private readonly options: LicensingOptions,
  ) {
    this.otherWriters = new DataVersion(() => store.dataVersion());
    this.invalidTokens = new Throttle(clock, { freeFailures: 50, maxWaitSeconds: 300, forgetAfterSeconds: 900 });
    this.seatFailures = new Throttle(clock, { freeFailures: 20, maxWaitSeconds: 300, forgetAfterSeconds: 900 });
  }

  start(): void {
    this.timer = setInterval(() => this.flushInSlices(), 1000);
    this.timer.unref?.();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.flush();
  }

  // ---- applications -------------------------------------------------------------------

  createApp(actor: Actor, input: { name: string; supportMessage: string }): AppView {
    const id = this.store.insertApp(input.name, input.supportMessage, this.clock());
    if (id === null) throw conflict(`an application named ${JSON.stringify(this.store.appByName(input.name)?.name ?? input.name)} already exists`, "name");
    this.audit.record({ actor: actor.name, address: actor.address, action: "app.create", target: `app ${id}`, outcome: "success", reason: input.name });
    return this.appView(this.requireApp(id));
  }

  listApps(limit: number, offset: number): { items: AppView[]; total: number } {
    return { items: this.store.apps(limit, offset).map((a) => ({ ...this.appView(a), licenses: a.licenses })), total: this.store.countApps() };
  }

  getApp(id: number): AppView {
    return this.appView(this.requireApp(id));
  }

  updateApp(actor: Actor, id: number, changes: { name?: string | undefined; supportMessage?: string | undefined }): AppView {
    this.requireApp(id);
    if (!this.store.updateApp(id, changes)) throw conflict(`an application named ${JSON.stringify(changes.name)} already exists`, "name");
    this.checkFailures.clear();
    this.audit.record({ actor: actor.name, address: actor.address, action: "app.update", target: `app ${id}`, outcome: "success" });
    return this.appView(this.requireApp(id));
  }

  deleteApp(actor: Actor, id: number): void {
    this.requireApp(id);
    // Counted and deleted in one transaction, so a key cut meanwhile by another process cannot slip in.
    immediate(this.db, () => {
      const keys = this.store.licensesOfApp(id);
      if (keys > 0) throw conflict(`application ${id} still has ${keys} license key${keys === 1 ? "" : "s"}; delete them first`, "id");
      this.store.deleteApp(id);
    });
    this.checkFailures.clear();
    this.audit.record({ actor: actor.name, address: actor.address, action: "app.delete", target: `app ${id}`, outcome: "success" });
  }

  private requireApp(id: number): AppRow {
    const app = this.store.app(id);
    if (!app) throw notFound(`no application with id ${id}`);
    return app;
  }

  private appView(a: AppRow): AppView {
    return { id: a.id, name: a.name, support_message: a.support_message, created_at: iso(a.created_at)! };
  }

  // ---- license keys -------------------------------------------------------------------

  createLicense(actor: Actor, input: { appId: number; activations: number; memo: string; expiresAt: number | null }): LicenseView {
    this.requireApp(input.appId);
    const token = newLicenseToken();
    const id = this.store.insertLicense({
      appId: input.appId,
      token,
      tokenHash: hashLicenseToken(token),
      allowed: input.activations,
      memo: input.memo,
      expiresAt: input.expiresAt,
      now: this.clock(),
    });
    this.audit.record({ actor: actor.name, address: actor.address, action: "license.create", target: `license ${id}`, outcome: "success", reason: `app ${input.appId}, ${input.activations} activations` });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "created" } });
    return this.getLicense(id, true);
  }

  listLicenses(filter: LicenseFilter, limit: number, offset: number, reveal: boolean): { items: LicenseView[]; total: number } {
    // Prefix searches would spell out a masked token one character at a time: without reveal, q matches the memo only.
    const scoped = reveal ? filter : { ...filter, matchTokens: false };
    return {
      items: this.store.licenses(scoped, limit, offset).map((l) => this.licenseView(l, reveal)),
      total: this.store.countLicenses(scoped),
    };
  }

  getLicense(id: number, reveal: boolean): LicenseView {
    return this.licenseView(this.requireLicense(id), reveal);
  }

  updateLicense(
    actor: Actor,
    id: number,
    changes: { enabled?: boolean | undefined; memo?: string | undefined; activations?: number | undefined; expiresAt?: number | null | undefined },
  ): LicenseView {
    this.requireLicense(id);
    this.store.updateLicense(id, { enabled: changes.enabled, memo: changes.memo, allowed: changes.activations, expiresAt: changes.expiresAt });
    const what = Object.entries(changes)
      .filter(([, v]) => v !== undefined)
      .map(([k]) => k)
      .join(", ");
    this.audit.record({ actor: actor.name, address: actor.address, action: "license.update", target: `license ${id}`, outcome: "success", reason: what || null });
    this.invalidateCache();
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "updated" } });
    return this.getLicense(id, true);
  }

  deleteLicense(actor: Actor, id: number): void {
    this.requireLicense(id);
    this.pendingLicenses.delete(id);
    this.store.deleteLicense(id);
    this.invalidateCache();
    this.audit.record({ actor: actor.name, address: actor.address, action: "license.delete", target: `license ${id}`, outcome: "success" });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "deleted" } });
  }

  activations(id: number): { items: ActivationView[]; total: number } {
    this.requireLicense(id);
    const items = this.store.activations(id).map((a) => this.activationView(a));
    return { items, total: items.length };
  }

  removeActivation(actor: Actor, id: number, hwid: string): void {
    this.requireLicense(id);
    const removed = immediate(this.db, () => this.store.removeActivation(id, hwid));
    if (!removed) throw notFound(`license ${id} has no activation for hwid ${JSON.stringify(hwid)}`);
    this.forgetReceipts(id, hwid);
    this.audit.record({ actor: actor.name, address: actor.address, action: "license.deactivate", target: `license ${id}`, outcome: "success", reason: `hwid ${hwid}` });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "deactivated", hwid } });
  }

  private requireLicense(id: number): LicenseWithApp {
    const license = this.store.license(id);
    if (!license) throw notFound(`no license key with id ${id}`);
    return license;
  }

  private licenseView(l: LicenseWithApp, reveal: boolean): LicenseView {
    const pending = this.pendingLicenses.get(l.id);
    return {
      id: l.id,
      app_id: l.app_id,
      app_name: l.app_name,
      token: reveal ? l.token : mask(l.token),
      activations: l.activations_allowed,
      activations_used: l.activations_used,
      remaining_activations: remaining(l),
      enabled: l.enabled === 1,
      memo: l.memo,
      expires_at: iso(l.expires_at),
      created_at: iso(l.created_at)!,
      total_activations: l.total_activations,
      total_checks: l.total_checks + (pending?.checks ?? 0),
      last_activation_at: iso(l.last_activation_at),
      last_activation_address: l.last_activation_address,
      last_check_at: iso(pending ? Math.max(pending.at, l.last_check_at ?? 0) : l.last_check_at),
      last_check_address: pending ? pending.address : l.last_check_address,
    };
  }

  private activationView(a: ActivationRow): ActivationView {
    const pending = this.pendingActivations.get(a.id);
    return {
      hwid: a.hwid,
      machine: a.machine,
      user: a.user,
      address: a.address,
      activated_at: iso(a.created_at)!,
      last_check_at: iso(pending ? Math.max(pending, a.last_check_at ?? 0) : a.last_check_at),
    };
  }

  // ---- the public API -----------------------------------------------------------------

  /** Looks a token up through its hash, then compares the token itself in constant time. */
  private find(token: string): LicenseRow | null {
    const row = this.store.byTokenHash(hashLicenseToken(token));
    return row && sameSecret(row.token, token) ? row : null;
  }

  /**
   * `check` is the hot path (every start of every licensed application): it reads licenses and
   * activations through a cache. The cache is dropped when another process commits (SQLite's
   * data_version, as for sessions) and when this process changes a key or an activation.
   */
  private freshCache(): void {
    if (this.otherWriters.changed() || this.licenseCache.size + this.cachedMachines > 200_000) this.invalidateCache();
  }

  private invalidateCache(): void {
    this.licenseCache.clear();
    this.checkFailures.clear();
    this.machines.clear();
    this.cachedMachines = 0;
  }

  private findCached(token: string): LicenseRow | null {
    const digest = this.digest;
    Bun.SHA256.hash(token, digest);
    const key = tokenKey(digest);
    const row = this.licenseCache.get(key);
    if (row !== undefined && sameSecret(row.token, token)) return row;
    // Not cached yet, or another token whose digest starts alike (then the index decides, uncached).
    const found = this.store.byTokenHash(digest.toHex());
    if (!found || !sameSecret(found.token, token)) return null;
    if (row === undefined) this.licenseCache.set(key, found);
    return found;
  }

  /** Nested maps: a number and the request's own string as keys, no key string built per request. */
  private machineEntry(licenseId: number, hwid: string): MachineCache {
    let perLicense = this.machines.get(licenseId);
    if (!perLicense) this.machines.set(licenseId, (perLicense = new Map()));
    let entry = perLicense.get(hwid);
    if (!entry) {
      perLicense.set(hwid, (entry = { activationId: null, receipt: null, checkReply: null, until: 0 }));
      this.cachedMachines++;
    }
    return entry;
  }

  /** The machine's cache entry, its activation id looked up once (null: not activated). */
  private activationCached(licenseId: number, identity: string): MachineCache {
    const entry = this.machineEntry(licenseId, identity);
    if (entry.activationId === null) entry.activationId = this.store.activation(licenseId, identity)?.id ?? null;
    return entry;
  }

  /**
   * A failed check's reply. With `app_id`, it carries that application's support message ("" when
   * the id names no application or the application has none), as activate's failures do; never
   * the message of the key's own application, which would tell a caller that the token exists.
   * Without `app_id`, the seed's body exactly.
   */
  private failedCheck(request: WireRequest, expired = false): WireReply {
    this.metrics.licensing("check", expired ? "410" : "404");
    const replies = request.app_id === undefined ? SEED_CHECK_FAILURES : this.appCheckFailures(request.app_id);
    return expired ? replies.expired : replies.invalid;
  }

  /** An application's failed-check replies, cached like the keys (an id of no application is read each time). */
  private appCheckFailures(appId: number): CheckFailures {
    const cached = this.checkFailures.get(appId);
    if (cached) return cached;
    const app = this.store.app(appId);
    if (!app) return NO_APP_CHECK_FAILURES;
    const replies = checkFailures(app.support_message);
    this.checkFailures.set(appId, replies);
    return replies;
  }

  private supportMessage(request: WireRequest, license: LicenseRow | null): string {
    const appId = request.app_id ?? license?.app_id;
    return appId === undefined ? "" : (this.store.app(appId)?.support_message ?? "");
  }

  private invalidTokenThrottled(address: string | null): number {
    return address === null ? 0 : this.invalidTokens.waitSeconds(address);
  }

  activate(request: WireRequest, address: string | null): WireReply {
    const identity = requireMachine(request);
    const now = this.clock();
    const wait = this.invalidTokenThrottled(address);
    if (wait > 0) return this.throttledReply(wait, "too many invalid license tokens from this address", request, address, "activate");
    const license = this.find(request.token);
    const failure = (status: number, error: string, reason: string): WireReply => {
      this.audit.record({ actor: null, address, action: "license.activate", target: license ? `license ${license.id}` : null, outcome: "failure", reason });
      this.metrics.licensing("activate", String(status));
      return { status, body: { result: "failure", error, support_message: this.supportMessage(request, license) } };
    };
    if (!license) {
      if (address !== null) this.invalidTokens.fail(address);
      return failure(404, "invalid activation token", "unknown token");
    }
    if (request.app_id !== undefined && request.app_id !== license.app_id) return failure(404, "invalid activation token", "wrong application");
    if (license.enabled !== 1) return failure(404, "invalid activation token", "disabled");
    if (license.expires_at !== null && now >= license.expires_at) return failure(410, "key is no longer valid", "expired");
    // The throttle guards new seats: a machine that already holds one is never locked out by it.
    const keyWait = this.store.activation(license.id, identity) ? 0 : this.seatFailures.waitSeconds(`license:${license.id}`);
    if (keyWait > 0) return this.throttledReply(keyWait, "too many failed activations for this key", request, address, "activate", license);

    // One immediate transaction: the seat, the activation and its audit entry are durable together.
    const outcome = immediate(this.db, () => {
      const existing = this.store.activation(license.id, identity);
      if (existing) {
        this.store.recordReactivation(license.id, now, address);
        this.store.touchActivation(existing.id, request.machine ?? null, request.user ?? null, address);
        this.audit.record({ actor: null, address, action: "license.activate", target: `license ${license.id}`, outcome: "success", reason: `machine ${identity} again (no seat used)` });
        return "again" as const;
      }
      if (!this.store.takeSeat(license.id, now, address)) return "full" as const;
      this.store.insertActivation({ licenseId: license.id, hwid: identity, machine: request.machine ?? null, user: request.user ?? null, address, now });
      this.audit.record({ actor: null, address, action: "license.activate", target: `license ${license.id}`, outcome: "success", reason: `machine ${identity}` });
      return "new" as const;
    });
    if (outcome === "full") {
      this.seatFailures.fail(`license:${license.id}`);
      return failure(410, "key is out of activations", "out of activations");
    }
    const fresh = this.store.license(license.id)!;
    this.metrics.licensing("activate", "201");
    this.events.emit("push", { topic: "licenses.activated", args: { id: license.id, hwid: identity, machine: request.machine ?? null, new_seat: outcome === "new", remaining: remaining(fresh) } });
    return {
      status: 201,
      body: { result: "ok", remainingActivations: remaining(fresh), receipt: this.receipt(fresh, identity, request.nonce, now) },
    };
  }

  check(request: WireRequest, address: AddressSource): WireReply {
    const now = this.clock();
    let known: string | null | undefined;
    const addressOf = () => (known === undefined ? (known = typeof address === "function" ? address() : address) : known);
    // With no address failing lately, nobody is throttled: no need to know who asks.
    const wait = this.invalidTokens.isEmpty() ? 0 : this.invalidTokenThrottled(addressOf());
    if (wait > 0) return this.throttledReply(wait, "too many invalid license tokens from this address", request, addressOf(), "check");
    this.freshCache();
    // No machine named: no activation can match, so the token is not even looked up.
    const identity = machineIdentity(request);
    if (identity === null) return this.failedCheck(request);
    const license = this.findCached(request.token);
    if (!license) {
      const from = addressOf();
      if (from !== null) this.invalidTokens.fail(from);
      return this.failedCheck(request);
    }
    if ((request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1) return this.failedCheck(request);
    if (license.expires_at !== null && now >= license.expires_at) return this.failedCheck(request, true);
    const machine = this.activationCached(license.id, identity);
    const activationId = machine.activationId;
    if (activationId === null) return this.failedCheck(request);
    const pending = this.pendingLicenses.get(license.id);
    if (pending) {
      pending.checks++;
      pending.at = now;
      // The last check's address: read again when another machine checks; a machine checking
      // again before the next flush (about a second) is taken to be where it was.
      if (pending.hwid !== identity) {
        pending.hwid = identity;
        pending.address = addressOf();
      }
    } else this.pendingLicenses.set(license.id, { checks: 1, at: now, address: addressOf(), hwid: identity });
    this.pendingActivations.set(activationId, now);
    this.metrics.licensing("check", "201");
    if (request.nonce !== undefined) return { status: 201, body: { result: "ok", receipt: this.newReceipt(license, identity, request.nonce, now) } };
    return this.cachedReceipt(machine, license, identity, now).checkReply;
  }

  deactivate(request: WireRequest, address: string | null): WireReply {
    const identity = requireMachine(request);
    const wait = this.invalidTokenThrottled(address);
    if (wait > 0) return this.throttledReply(wait, "too many invalid license tokens from this address", request, address, "deactivate");
    const license = this.find(request.token);
    if (!license || (request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1) {
      if (!license && address !== null) this.invalidTokens.fail(address);
      return { status: 404, body: { result: "failure", error: "invalid key" } };
    }
    const removed = immediate(this.db, () => {
      const ok = this.store.removeActivation(license.id, identity);
      this.audit.record({ actor: null, address, action: "license.deactivate", target: `license ${license.id}`, outcome: ok ? "success" : "failure", reason: ok ? `machine ${identity}` : `machine ${identity} not activated` });
      return ok;
    });
    if (!removed) return { status: 404, body: { result: "failure", error: "machine is not activated" } };
    this.forgetReceipts(license.id, identity);
    const fresh = this.store.license(license.id)!;
    this.events.emit("push", { topic: "licenses.changed", args: { id: license.id, change: "deactivated", hwid: identity } });
    return { status: 200, body: { result: "ok", remainingActivations: remaining(fresh) } };
  }

  publicKey(): { algorithm: "EdDSA"; key_id: string; public_key: string } {
    return { algorithm: "EdDSA", key_id: this.signingKey.keyId, public_key: this.signingKey.publicKeyPem };
  }

  private throttledReply(wait: number, why: string, request: WireRequest, address: string | null, call: string, license?: LicenseRow): WireReply {
    this.audit.record({ actor: null, address, action: `license.${call}`, target: license ? `license ${license.id}` : null, outcome: "denied", reason: `throttled: ${why}` });
    this.metrics.licensing(call, "429");
    return {
      status: 429,
      retryAfter: wait,
      body: { result: "failure", error: `${why}; retry in ${wait} s`, retry_after: wait, support_message: this.supportMessage(request, license ?? null) },
    };
  }

  private receipt(license: Pick<LicenseRow, "id" | "app_id" | "expires_at">, hwid: string, nonce: string | undefined, now: number): string {
    if (nonce !== undefined) return this.newReceipt(license, hwid, nonce, now);
    return this.cachedReceipt(this.machineEntry(license.id, hwid), license, hwid, now).receipt;
  }

  /** The machine's nonce-less receipt, signed again once its reuse time is over. */
  private cachedReceipt(entry: MachineCache, license: Pick<LicenseRow, "id" | "app_id" | "expires_at">, hwid: string, now: number): MachineCache & { receipt: string; checkReply: WireReply } {
    if (entry.receipt === null || entry.checkReply === null || now >= entry.until) {
      entry.receipt = this.newReceipt(license, hwid, undefined, now);
      const body = { result: "ok", receipt: entry.receipt };
      entry.checkReply = { status: 201, body, json: JSON.stringify(body) };
      // Reused for a minute at most, and never for more than a tenth of its lifetime, so that
      // every receipt handed out still has nearly all of it left (a short --receipt-ttl included).
      entry.until = now + Math.min(60_000, this.options.receiptTtlSeconds * 100);
    }
    return entry as MachineCache & { receipt: string; checkReply: WireReply };
  }

  private newReceipt(license: Pick<LicenseRow, "id" | "app_id" | "expires_at">, hwid: string, nonce: string | undefined, now: number): string {
    const iat = Math.floor(now / 1000);
    let exp = iat + this.options.receiptTtlSeconds;
    if (license.expires_at !== null) exp = Math.min(exp, Math.floor(license.expires_at / 1000));
    return signReceipt(this.signingKey, {
      iss: "latchkey",
      app: license.app_id,
      key: license.id,
      hwid,
      iat,
      exp,
      grace: this.options.receiptGraceSeconds,
      ...(nonce === undefined ? {} : { nonce }),
    });
  }

  /** The machine's activation is gone: so are its cached activation and receipt. */
  private forgetReceipts(licenseId: number, hwid: string): void {
    if (this.machines.get(licenseId)?.delete(hwid)) this.cachedMachines--;
  }

  /** Writes every batched check counter now (on shutdown, and in tests). */
  flush(): void {
    while (this.flushSlice()) {
      // each slice is its own transaction
    }
  }

  /**
   * The timer's flush: a slice of at most FLUSH_SLICE keys and machines per transaction, the next
   * slice on a later turn of the event loop, so that a second's worth of checks on many keys never
   * holds up the checks being answered meanwhile (each row costs a few microseconds to write).
   */
  private flushInSlices(): void {
    if (this.flushSlice()) setImmediate(() => this.flushInSlices());
  }

  /** Writes one slice of the batched counters; true when more are left. */
  private flushSlice(): boolean {
    const licenses = takeSome(this.pendingLicenses, FLUSH_SLICE).map(([id, p]) => ({ id, ...p }));
    const activations = takeSome(this.pendingActivations, FLUSH_SLICE).map(([id, at]) => ({ id, at }));
    // Counters may be lost in a power cut (SPEC §10 lets them be batched): no fsync per slice.
    if (licenses.length > 0 || activations.length > 0) immediateUnsynced(this.db, () => this.store.flushChecks(licenses, activations));
    return this.pendingLicenses.size > 0 || this.pendingActivations.size > 0;
  }
}

const FLUSH_SLICE = 250;

/** Removes and returns up to `limit` entries of a map, oldest first. */
function takeSome<K, V>(map: Map<K, V>, limit: number): [K, V][] {
  const taken: [K, V][] = [];
  for (const entry of map) {
    if (taken.length === limit) break;
    taken.push(entry);
  }
  for (const [key] of taken) map.delete(key);
  return taken;
}

function remaining(l: { activations_allowed: number; activations_used: number }): number {
  return l.activations_allowed === -1 ? -1 : Math.max(0, l.activations_allowed - l.activations_used);
}

/** The machine an activation belongs to: its hwid, or its name for clients that send none; null when neither is given. */
export function machineIdentity(request: WireRequest): string | null {
  return request.hwid ?? (request.machine === undefined ? null : `machine:${request.machine}`);
}

/** Activate and deactivate name the machine whose seat they take or free (a check without one simply fails). */
function requireMachine(request: WireRequest): string {
  const identity = machineIdentity(request);
  if (identity === null) throw badRequest("hwid is required (or machine, for clients that have no hardware id)", "hwid");
  return identity;
}
