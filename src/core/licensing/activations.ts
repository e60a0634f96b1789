/**
 * Machines on license keys: the public activate / check / deactivate calls of the seed, each
 * returning an outcome (wire.ts), and the admins' view and removal of activations. Seats are taken
 * and freed in immediate transactions, so their count is exact under concurrency.
 */
import type { Database } from "bun:sqlite";
import type { ActivationRow, LicenseRow, LicenseStore } from "../../db/licenses.ts";
import { immediate } from "../../db/open.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { notFound } from "../errors.ts";
import type { EventHub } from "../events.ts";
import { isoTime } from "../fields.ts";
import { sameSecret, sha256Hex } from "../secrets.ts";
import { appScope, licenseScope, type CountMetric, type Stats } from "../stats.ts";
import { Throttle } from "../throttle.ts";
import type { CheckCache } from "./check-cache.ts";
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

/** The charts a key's activations and checks count in besides the overall one: the key's and its application's. */
function scopesOf(license: LicenseRow | null): readonly string[] {
  return license === null ? NO_KEY : [licenseScope(license.id), appScope(license.app_id)];
}

export class Activations {
  /** Unknown tokens, per address: guessing tokens is slowed down. */
  private readonly invalidTokens: Throttle;
  /** Activations refused for want of a seat, per key. */
  private readonly seatFailures: Throttle;

  constructor(
    private readonly db: Database,
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
    private readonly cache: CheckCache,
    private readonly counters: CheckCounters,
    private readonly receipts: ReceiptIssuer,
    private readonly stats: Stats,
  ) {
    this.invalidTokens = new Throttle(clock, { freeFailures: 50, maxWaitSeconds: 300, forgetAfterSeconds: 900 });
    this.seatFailures = new Throttle(clock, { freeFailures: 20, maxWaitSeconds: 300, forgetAfterSeconds: 900 });
  }

  activate(request: WireRequest, address: string | null): ActivateOutcome {
    const identity = requireMachine(request);
    const now = this.clock();
    const wait = this.addressWait(address);
    if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, address, "activate");
    const license = this.find(request.token);
    const failure = (kind: "invalid" | "expired" | "full", reason: string): ActivateOutcome => {
      this.stats.count("activations_failed", 1, scopesOf(license), now);
      this.audit.record({
        actor: null,
        address,
        action: "license.activate",
        target: license ? `license ${license.id}` : null,
        outcome: "failure",
        reason,
      });
      return { kind, supportMessage: this.supportMessage(request, license) };
    };
    if (!license) {
      if (address !== null) this.invalidTokens.fail(address);
      return failure("invalid", "unknown token");
    }
    if (request.app_id !== undefined && request.app_id !== license.app_id) return failure("invalid", "wrong application");
    if (license.enabled !== 1) return failure("invalid", "disabled");
    if (license.expires_at !== null && now >= license.expires_at) return failure("expired", "expired");
    // The throttle guards new seats: a machine that already holds one is never locked out by it.
    const keyWait = this.store.activation(license.id, identity) ? 0 : this.seatFailures.waitSeconds(`license:${license.id}`);
    if (keyWait > 0) return this.throttled(keyWait, SEAT_FAILURES, request, address, "activate", license);

    // One immediate transaction: the seat, the activation and its audit entry are durable together.
    const seat = immediate(this.db, () => {
      const existing = this.store.activation(license.id, identity);
      if (existing) {
        this.store.recordReactivation(license.id, now, address);
        this.store.touchActivation(existing.id, request.machine ?? null, request.user ?? null, address);
        this.audit.record({
          actor: null,
          address,
          action: "license.activate",
          target: `license ${license.id}`,
          outcome: "success",
          reason: `machine ${identity} again (no seat used)`,
        });
        return "again" as const;
      }
      if (!this.store.takeSeat(license.id, now, address)) return "full" as const;
      this.store.insertActivation({
        licenseId: license.id,
        hwid: identity,
        machine: request.machine ?? null,
        user: request.user ?? null,
        address,
        now,
      });
      this.audit.record({
        actor: null,
        address,
        action: "license.activate",
        target: `license ${license.id}`,
        outcome: "success",
        reason: `machine ${identity}`,
      });
      return "new" as const;
    });
    if (seat === "full") {
      this.seatFailures.fail(`license:${license.id}`);
      return failure("full", "out of activations");
    }
    const fresh = this.store.license(license.id)!;
    const remaining = remainingActivations(fresh);
    this.stats.count("activations_ok", 1, scopesOf(license), now);
    this.events.emit("push", {
      topic: "licenses.activated",
      args: { id: license.id, hwid: identity, machine: request.machine ?? null, new_seat: seat === "new", remaining },
    });
    const receipt =
      request.nonce === undefined
        ? this.receipts.forMachine(this.cache.machine(license.id, identity), fresh, identity, now).receipt
        : this.receipts.sign(fresh, identity, request.nonce, now);
    return { kind: "ok", remaining, receipt };
  }

  /** The hot path: keys and machines are read through the check cache, counters batched. */
  check(request: WireRequest, address: AddressSource): CheckOutcome {
    const now = this.clock();
    let known: string | null | undefined;
    const addressOf = () => (known === undefined ? (known = typeof address === "function" ? address() : address) : known);
    // With no address failing lately, nobody is throttled: no need to know who asks.
    const wait = this.invalidTokens.isEmpty() ? 0 : this.addressWait(addressOf());
    if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, addressOf(), "check");
    this.cache.refresh();
    // No machine named: no activation can match, so the token is not even looked up.
    const identity = machineIdentity(request);
    if (identity === null) return this.failedCheck(request, now, null);
    const license = this.cache.key(request.token);
    if (!license) {
      const from = addressOf();
      if (from !== null) this.invalidTokens.fail(from);
      return this.failedCheck(request, now, null);
    }
    if ((request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1)
      return this.failedCheck(request, now, license);
    if (license.expires_at !== null && now >= license.expires_at) return this.failedCheck(request, now, license, true);
    const machine = this.cache.activatedMachine(license.id, identity);
    if (machine.activationId === null) return this.failedCheck(request, now, license);
    this.counters.count(license.id, license.app_id, machine.activationId, identity, now, addressOf);
    if (request.nonce !== undefined) return { kind: "ok", receipt: this.receipts.sign(license, identity, request.nonce, now) };
    return this.receipts.forMachine(machine, license, identity, now);
  }

  deactivate(request: WireRequest, address: string | null): DeactivateOutcome {
    const identity = requireMachine(request);
    const wait = this.addressWait(address);
    if (wait > 0) return this.throttled(wait, INVALID_TOKENS, request, address, "deactivate");
    const license = this.find(request.token);
    if (!license || (request.app_id !== undefined && request.app_id !== license.app_id) || license.enabled !== 1) {
      if (!license && address !== null) this.invalidTokens.fail(address);
      return { kind: "invalid" };
    }
    const removed = immediate(this.db, () => {
      const ok = this.store.removeActivation(license.id, identity);
      this.audit.record({
        actor: null,
        address,
        action: "license.deactivate",
        target: `license ${license.id}`,
        outcome: ok ? "success" : "failure",
        reason: ok ? `machine ${identity}` : `machine ${identity} not activated`,
      });
      return ok;
    });
    if (!removed) return { kind: "not-activated" };
    this.cache.forgetMachine(license.id, identity);
    const remaining = remainingActivations(this.store.license(license.id)!);
    this.events.emit("push", { topic: "licenses.changed", args: { id: license.id, change: "deactivated", hwid: identity } });
    return { kind: "ok", remaining };
  }

  /** The machines a key is activated on, for admins. */
  list(licenseId: number): { items: ActivationView[]; total: number } {
    requireLicense(this.store, licenseId);
    const items = this.store.activations(licenseId).map((a) => this.view(a));
    return { items, total: items.length };
  }

  /** An admin removes a machine's activation, which frees its seat. */
  remove(actor: Actor, licenseId: number, hwid: string): void {
    requireLicense(this.store, licenseId);
    const removed = immediate(this.db, () => this.store.removeActivation(licenseId, hwid));
    if (!removed) throw notFound(`license ${licenseId} has no activation for hwid ${JSON.stringify(hwid)}`);
    this.cache.forgetMachine(licenseId, hwid);
    this.audit.record({
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
  private find(token: string): LicenseRow | null {
    const row = this.store.byTokenHash(sha256Hex(token));
    return row && sameSecret(row.token, token) ? row : null;
  }

  /**
   * A failed check carries the support message of the application `app_id` names, as activate's
   * failures do, and none without `app_id` (check-cache.ts keeps both kinds ready). It counts
   * for the key's charts when the token names one.
   */
  private failedCheck(request: WireRequest, now: number, license: LicenseRow | null, expired = false): CheckFailed {
    this.stats.count("checks_failed", 1, scopesOf(license), now);
    const failures = this.cache.failuresFor(request.app_id);
    return expired ? failures.expired : failures.invalid;
  }

  /** Activate's failures and every throttled call: the message of the application named, or else of the key's own. */
  private supportMessage(request: WireRequest, license: LicenseRow | null): string {
    const appId = request.app_id ?? license?.app_id;
    return appId === undefined ? "" : (this.store.app(appId)?.support_message ?? "");
  }

  private addressWait(address: string | null): number {
    return address === null ? 0 : this.invalidTokens.waitSeconds(address);
  }

  private throttled(
    wait: number,
    reason: string,
    request: WireRequest,
    address: string | null,
    call: WireCall,
    license?: LicenseRow,
  ): Throttled {
    const counted = THROTTLED_COUNTS[call];
    if (counted) this.stats.count(counted, 1, scopesOf(license ?? null));
    this.audit.record({
      actor: null,
      address,
      action: `license.${call}`,
      target: license ? `license ${license.id}` : null,
      outcome: "denied",
      reason: `throttled: ${reason}`,
    });
    return { kind: "throttled", retryAfter: wait, reason, supportMessage: this.supportMessage(request, license ?? null) };
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
