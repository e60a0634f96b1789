/**
 * Machines on license keys: the public activate / check / deactivate calls of the seed, each
 * returning an outcome (wire.ts), and the admins' view and removal of activations. Seats are taken
 * and freed in transactions that lock the key first, and every seat is decided by a conditional
 * statement (a machine's activation by a conditional INSERT, the seat by a conditional UPDATE), so
 * their count is exact under concurrency, on SQLite and on PostgreSQL alike.
 */
import type { ActivationRow, LicenseRow, LicenseStore } from "../../db/licenses.ts";
import type { Sql } from "../../db/sql.ts";
import type { Actor } from "../accounts.ts";
import type { Audit, AuditEntry } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { notFound } from "../errors.ts";
import type { EventHub } from "../events.ts";
import { isoTime } from "../fields.ts";
import { sameSecret, sha256Hex } from "../secrets.ts";
import { appScope, licenseScope, type CountMetric, type Stats } from "../stats.ts";
import { SharedThrottle, type ThrottleNews, type ThrottleSharing } from "../shared-throttle.ts";
import type { CheckCache, MachineEntry } from "./check-cache.ts";
import type { CheckCounters } from "./counters.ts";
import { remainingActivations, requireLicense } from "./keys.ts";
import type { ReceiptIssuer } from "./receipt-issuer.ts";
import {
  machineIdentity,
  requireMachine,
  type ActivateOutcome,
  type AddressSource,
  type CheckFailed,
  type CheckOutcome,
  type DeactivateOutcome,
  type MaybePromise,
  type Throttled,
  type WireRequest,
} from "./wire.ts";

export interface ActivationView {
  hwid: string;
  machine: string | null;
  user: string | null;
  address: string | null;
  activated_at: string;
  last_check_at: string | null;
}

const INVALID_TOKENS = "too many invalid license tokens from this address";
const SEAT_FAILURES = "too many failed activations for this key";

type WireCall = "activate" | "check" | "deactivate";

/** A throttled activation or check is a failed one on the charts; deactivations are not charted. */
const THROTTLED_COUNTS: Record<WireCall, CountMetric | null> = { activate: "activations_failed", check: "checks_failed", deactivate: null };

const NO_KEY: readonly string[] = [];

/** Seats change one key at a time: its row is let go before the commit's disk write (see Sql). */
const ACTIVATION = { releaseBeforeFlush: true } as const;

/** The charts a key's activations and checks count in besides the overall one: the key's and its application's. */
function scopesOf(license: LicenseRow | null): readonly string[] {
  return license === null ? NO_KEY : [licenseScope(license.id), appScope(license.app_id)];
}

export class Activations {
  /** Unknown tokens, per address: guessing tokens is slowed down. */
  private readonly invalidTokens: SharedThrottle;
  /** Activations refused for want of a seat, per key. */
  private readonly seatFailures: SharedThrottle;

  constructor(
    private readonly sql: Sql,
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
    private readonly cache: CheckCache,
    private readonly counters: CheckCounters,
    private readonly receipts: ReceiptIssuer,
    private readonly stats: Stats,
    /** Where the throttles count across the processes and nodes on the database. */
    sharing: ThrottleSharing,
  ) {
    const limits = { maxWaitSeconds: 300, forgetAfterSeconds: 900 };
    this.invalidTokens = new SharedThrottle("license.invalid_token", clock, { freeFailures: 50, ...limits }, sharing);
    this.seatFailures = new SharedThrottle("license.seat_failures", clock, { freeFailures: 20, ...limits }, sharing);
  }

  /** A throttle bucket another node told of. */
  heardThrottle(news: ThrottleNews): void {
    for (const throttle of [this.invalidTokens, this.seatFailures])
      if (throttle.name === news.limiter) throttle.heard(news.key, news.state);
  }

  async activate(request: WireRequest, address: string | null): Promise<ActivateOutcome> {
    const identity = requireMachine(request);
    const now = this.clock();
    const wait = await this.addressWait(address);
    if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, address, "activate");
    const license = await this.find(request.token);
    const failure = async (kind: "invalid" | "expired" | "full", reason: string): Promise<ActivateOutcome> => {
      this.stats.count("activations_failed", 1, scopesOf(license), now);
      await this.audit.record({
        actor: null,
        address,
        action: "license.activate",
        target: license ? `license ${license.id}` : null,
        outcome: "failure",
        reason,
      });
      return { kind, supportMessage: await this.supportMessage(request, license) };
    };
    if (!license) {
      if (address !== null) await this.invalidTokens.fail(address);
      return failure("invalid", "unknown token");
    }
    if (request.app_id !== undefined && request.app_id !== license.app_id) return failure("invalid", "wrong application");
    if (license.enabled !== 1) return failure("invalid", "disabled");
    if (license.expires_at !== null && now >= license.expires_at) return failure("expired", "expired");
    // The throttle guards new seats: a machine that already holds one is never locked out by it.
    const seatWait = await this.seatFailures.waitSeconds(`license:${license.id}`);
    const keyWait = seatWait > 0 && !(await this.store.activation(license.id, identity)) ? seatWait : 0;
    if (keyWait > 0) return this.throttled(keyWait, SEAT_FAILURES, request, address, "activate", license);

    // One transaction: the seat, the activation and its audit entry are durable together (see
    // LicenseStore.activateMachine); the entry of the outcome is written with it.
    const entry = (reason: string): AuditEntry => ({
      actor: null,
      address,
      action: "license.activate",
      target: `license ${license.id}`,
      outcome: "success",
      reason,
    });
    const entries = { newSeat: entry(`machine ${identity}`), again: entry(`machine ${identity} again (no seat used)`) };
    const seat = await this.store.activateMachine(
      { licenseId: license.id, hwid: identity, machine: request.machine ?? null, user: request.user ?? null, address, now },
      { newSeat: this.audit.row(entries.newSeat), again: this.audit.row(entries.again) },
    );
    if (seat.kind === "new") this.audit.announce(entries.newSeat);
    if (seat.kind === "again") this.audit.announce(entries.again);
    // Deleted since it was looked up: as unknown as a token that never was.
    if (seat.kind === "gone") return failure("invalid", "unknown token");
    if (seat.kind === "full") {
      await this.seatFailures.fail(`license:${license.id}`);
      return failure("full", "out of activations");
    }
    const fresh = { ...license, ...seat.seats };
    const remaining = remainingActivations(fresh);
    this.stats.count("activations_ok", 1, scopesOf(license), now);
    this.events.emit("push", {
      topic: "licenses.activated",
      args: { id: license.id, hwid: identity, machine: request.machine ?? null, new_seat: seat.kind === "new", remaining },
    });
    const receipt =
      request.nonce === undefined
        ? this.receipts.forMachine(this.cache.machine(license.id, identity), fresh, identity, now).receipt
        : this.receipts.sign(fresh, identity, request.nonce, now);
    return { kind: "ok", remaining, receipt };
  }

  /**
   * The hot path: keys and machines are read through the check cache, counters batched. The
   * outcome comes at once when the cache holds what the check needs (no database, no await), as a
   * promise when the database must be read (the first check of a key or a machine, an unknown
   * token, a failure naming an application not cached yet) or the audit log written (throttled).
   */
  check(request: WireRequest, address: AddressSource): MaybePromise<CheckOutcome> {
    const now = this.clock();
    let known: string | null | undefined;
    const addressOf = () => (known === undefined ? (known = typeof address === "function" ? address() : address) : known);
    // With no address failing lately, nobody is throttled: no need to know who asks.
    if (!this.invalidTokens.isEmpty()) {
      const wait = this.addressWait(addressOf());
      if (wait instanceof Promise) {
        return wait.then((w) =>
          w > 0 ? this.throttled(w, INVALID_TOKENS, request, addressOf(), "check") : this.unthrottledCheck(request, now, addressOf),
        );
      }
      if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, addressOf(), "check");
    }
    return this.unthrottledCheck(request, now, addressOf);
  }

  /** A check whose address need not wait. */
  private unthrottledCheck(request: WireRequest, now: number, addressOf: () => string | null): MaybePromise<CheckOutcome> {
    this.cache.refresh();
    // No machine named: no activation can match, so the token is not even looked up.
    const identity = machineIdentity(request);
    if (identity === null) return this.failedCheck(request, now, null);
    const license = this.cache.key(request.token);
    if (license instanceof Promise) return license.then((found) => this.checkKey(request, now, identity, found, addressOf));
    return this.checkKey(request, now, identity, license, addressOf);
  }

  /** A check once its key is known (null: the token names none). */
  private checkKey(
    request: WireRequest,
    now: number,
    identity: string,
    license: LicenseRow | null,
    addressOf: () => string | null,
  ): MaybePromise<CheckOutcome> {
    if (!license) {
      const from = addressOf();
      // Counted here at once; the answer does not wait for the database's count.
      if (from !== null) void this.invalidTokens.fail(from);
      return this.failedCheck(request, now, null);
    }
    if ((request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1)
      return this.failedCheck(request, now, license);
    if (license.expires_at !== null && now >= license.expires_at) return this.failedCheck(request, now, license, true);
    const machine = this.cache.activatedMachine(license.id, identity);
    if (machine instanceof Promise) return machine.then((entry) => this.checkMachine(request, now, identity, license, entry, addressOf));
    return this.checkMachine(request, now, identity, license, machine, addressOf);
  }

  /** A check of a valid key once the machine's entry is known. */
  private checkMachine(
    request: WireRequest,
    now: number,
    identity: string,
    license: LicenseRow,
    machine: MachineEntry,
    addressOf: () => string | null,
  ): MaybePromise<CheckOutcome> {
    if (machine.activationId === null) return this.failedCheck(request, now, license);
    this.counters.count(license.id, license.app_id, machine.activationId, identity, now, addressOf);
    if (request.nonce !== undefined) return { kind: "ok", receipt: this.receipts.sign(license, identity, request.nonce, now) };
    return this.receipts.forMachine(machine, license, identity, now);
  }

  async deactivate(request: WireRequest, address: string | null): Promise<DeactivateOutcome> {
    const identity = requireMachine(request);
    const wait = await this.addressWait(address);
    if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, address, "deactivate");
    const license = await this.find(request.token);
    if (!license || (request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1) {
      if (!license && address !== null) await this.invalidTokens.fail(address);
      return { kind: "invalid" };
    }
    const seats = await this.sql.transaction(async () => {
      await this.store.lockLicense(license.id);
      const left = await this.store.removeActivation(license.id, identity);
      await this.audit.record({
        actor: null,
        address,
        action: "license.deactivate",
        target: `license ${license.id}`,
        outcome: left ? "success" : "failure",
        reason: left ? `machine ${identity}` : `machine ${identity} not activated`,
      });
      return left;
    }, ACTIVATION);
    if (!seats) return { kind: "not-activated" };
    this.cache.forgetMachine(license.id, identity);
    const remaining = remainingActivations(seats);
    this.events.emit("push", { topic: "licenses.changed", args: { id: license.id, change: "deactivated", hwid: identity } });
    return { kind: "ok", remaining };
  }

  /** The machines a key is activated on, for admins. */
  async list(licenseId: number): Promise<{ items: ActivationView[]; total: number }> {
    await requireLicense(this.store, licenseId);
    const items = (await this.store.activations(licenseId)).map((a) => this.view(a));
    return { items, total: items.length };
  }

  /** An admin removes a machine's activation, which frees its seat. */
  async remove(actor: Actor, licenseId: number, hwid: string): Promise<void> {
    await requireLicense(this.store, licenseId);
    const removed = await this.sql.transaction(async () => {
      await this.store.lockLicense(licenseId);
      return this.store.removeActivation(licenseId, hwid);
    });
    if (!removed) throw notFound(`license ${licenseId} has no activation for hwid ${JSON.stringify(hwid)}`);
    this.cache.forgetMachine(licenseId, hwid);
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "license.deactivate",
      target: `license ${licenseId}`,
      outcome: "success",
      reason: `hwid ${hwid}`,
    });
    this.events.emit("push", { topic: "licenses.changed", args: { id: licenseId, change: "deactivated", hwid } });
  }

  /** Looks a token up through its hash, then compares the token itself in constant time. */
  private async find(token: string): Promise<LicenseRow | null> {
    const row = await this.store.byTokenHash(sha256Hex(token));
    return row && sameSecret(row.token, token) ? row : null;
  }

  /**
   * A failed check carries the support message of the application `app_id` names, as activate's
   * failures do, and none without `app_id` (check-cache.ts keeps both kinds ready). It counts
   * for the key's charts when the token names one.
   */
  private failedCheck(request: WireRequest, now: number, license: LicenseRow | null, expired = false): MaybePromise<CheckFailed> {
    this.stats.count("checks_failed", 1, scopesOf(license), now);
    const failures = this.cache.failuresFor(request.app_id);
    if (failures instanceof Promise) return failures.then((read) => (expired ? read.expired : read.invalid));
    return expired ? failures.expired : failures.invalid;
  }

  /** Activate's failures and every throttled call: the message of the application named, or else of the key's own. */
  private async supportMessage(request: WireRequest, license: LicenseRow | null): Promise<string> {
    const appId = request.app_id ?? license?.app_id;
    return appId === undefined ? "" : ((await this.store.app(appId))?.support_message ?? "");
  }

  private addressWait(address: string | null): number | Promise<number> {
    return address === null ? 0 : this.invalidTokens.waitSeconds(address);
  }

  private async throttled(
    wait: number,
    reason: string,
    request: WireRequest,
    address: string | null,
    call: WireCall,
    license?: LicenseRow,
  ): Promise<Throttled> {
    const counted = THROTTLED_COUNTS[call];
    if (counted) this.stats.count(counted, 1, scopesOf(license ?? null));
    await this.audit.record({
      actor: null,
      address,
      action: `license.${call}`,
      target: license ? `license ${license.id}` : null,
      outcome: "denied",
      reason: `throttled: ${reason}`,
    });
    return { kind: "throttled", retryAfter: wait, reason, supportMessage: await this.supportMessage(request, license ?? null) };
  }

  private view(a: ActivationRow): ActivationView {
    const pending = this.counters.pendingMachine(a.id);
    return {
      hwid: a.hwid,
      machine: a.machine,
      user: a.user,
      address: a.address,
      activated_at: isoTime(a.created_at),
      last_check_at: isoTime(pending ? Math.max(pending, a.last_check_at ?? 0) : a.last_check_at),
    };
  }
}
