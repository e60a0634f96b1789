/**
 * License keys: cut, listed, changed and deleted by admins. The token is shown to admins, masked
 * for viewers, and looked up through its SHA-256 (sha256Hex, stored as `token_hash`).
 */
import type { LicenseFilter, LicenseStore, LicenseWithApp } from "../../db/licenses.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import { notFound } from "../errors.ts";
import type { EventHub } from "../events.ts";
import { isoTime } from "../fields.ts";
import { maskSecret, randomFromAlphabet, sha256Hex } from "../secrets.ts";
import { requireApp } from "./apps.ts";
import type { CheckCache } from "./check-cache.ts";
import type { CheckCounters } from "./counters.ts";

/** As in the seed: 25 characters A-Z0-9. */
const TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const TOKEN_LENGTH = 25;

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

/** Seats left on a key; -1 for an unlimited one. */
export function remainingActivations(l: { activations_allowed: number; activations_used: number }): number {
  return l.activations_allowed === -1 ? -1 : Math.max(0, l.activations_allowed - l.activations_used);
}

export async function requireLicense(store: LicenseStore, id: number): Promise<LicenseWithApp> {
  const license = await store.license(id);
  if (!license) throw notFound(`no license key with id ${id}`);
  return license;
}

export class LicenseKeys {
  constructor(
    private readonly store: LicenseStore,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
    private readonly checks: CheckCache,
    /** Check counters not written yet: the views add them. */
    private readonly counters: CheckCounters,
  ) {}

  async create(actor: Actor, input: { appId: number; activations: number; memo: string; expiresAt: number | null }): Promise<LicenseView> {
    await requireApp(this.store, input.appId);
    const token = randomFromAlphabet(TOKEN_ALPHABET, TOKEN_LENGTH);
    const id = await this.store.insertLicense({
      appId: input.appId,
      token,
      tokenHash: sha256Hex(token),
      allowed: input.activations,
      memo: input.memo,
      expiresAt: input.expiresAt,
      now: this.clock(),
    });
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "license.create",
      target: `license ${id}`,
      outcome: "success",
      reason: `app ${input.appId}, ${input.activations} activations`,
    });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "created" } });
    return this.get(id, true);
  }

  async list(filter: LicenseFilter, limit: number, offset: number, reveal: boolean): Promise<{ items: LicenseView[]; total: number }> {
    // Prefix searches would spell out a masked token one character at a time: without reveal, q matches the memo only.
    const scoped = reveal ? filter : { ...filter, matchTokens: false };
    const [licenses, total] = await Promise.all([this.store.licenses(scoped, limit, offset), this.store.countLicenses(scoped)]);
    return { items: licenses.map((l) => this.view(l, reveal)), total };
  }

  async get(id: number, reveal: boolean): Promise<LicenseView> {
    return this.view(await requireLicense(this.store, id), reveal);
  }

  async update(
    actor: Actor,
    id: number,
    changes: {
      enabled?: boolean | undefined;
      memo?: string | undefined;
      activations?: number | undefined;
      expiresAt?: number | null | undefined;
    },
  ): Promise<LicenseView> {
    await requireLicense(this.store, id);
    await this.store.updateLicense(id, {
      enabled: changes.enabled,
      memo: changes.memo,
      allowed: changes.activations,
      expiresAt: changes.expiresAt,
    });
    // At once: checks answered from memory must not see the key as it was.
    this.checks.clear();
    const what = Object.entries(changes)
      .filter(([, v]) => v !== undefined)
      .map(([k]) => k)
      .join(", ");
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "license.update",
      target: `license ${id}`,
      outcome: "success",
      reason: what || null,
    });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "updated" } });
    return this.get(id, true);
  }

  async delete(actor: Actor, id: number): Promise<void> {
    await requireLicense(this.store, id);
    await this.store.deleteLicense(id);
    this.checks.clear();
    // Last: once the key is gone from the database and the cache, its checks fail, and are not counted again.
    this.counters.forgetKey(id);
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "license.delete",
      target: `license ${id}`,
      outcome: "success",
    });
    this.events.emit("push", { topic: "licenses.changed", args: { id, change: "deleted" } });
  }

  private view(l: LicenseWithApp, reveal: boolean): LicenseView {
    const pending = this.counters.pendingKey(l.id);
    return {
      id: l.id,
      app_id: l.app_id,
      app_name: l.app_name,
      token: reveal ? l.token : maskSecret(l.token),
      activations: l.activations_allowed,
      activations_used: l.activations_used,
      remaining_activations: remainingActivations(l),
      enabled: l.enabled === 1,
      memo: l.memo,
      expires_at: isoTime(l.expires_at),
      created_at: isoTime(l.created_at),
      total_activations: l.total_activations,
      total_checks: l.total_checks + (pending?.checks ?? 0),
      last_activation_at: isoTime(l.last_activation_at),
      last_activation_address: l.last_activation_address,
      last_check_at: isoTime(pending ? Math.max(pending.at, l.last_check_at ?? 0) : l.last_check_at),
      last_check_address: pending ? pending.address : l.last_check_address,
    };
  }
}
