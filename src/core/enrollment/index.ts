/**
 * Pre-shared enrollment keys and client registration (woho seed), composed from one module per
 * concern: `settings.ts` (require_auth_key), `keys.ts` (the keys' lifecycle: pending → active,
 * bound to one client UUID → revoked; reset returns a key to pending), `registration.ts` (the
 * woho table), `clients.ts` (enrolled clients) and `presence.ts` (who is online, as the
 * WebSocket layer tells). `db/enrollment.ts` holds their SQL.
 */
import type { Binding, EnrollmentStore, KeyStatus } from "../../db/enrollment.ts";
import type { NodeStore } from "../../db/nodes.ts";
import type { SettingsStore } from "../../db/settings.ts";
import type { Sql } from "../../db/sql.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";
import type { Principal } from "../sessions.ts";
import type { Stats } from "../stats.ts";
import { EnrollmentClients, type ClientView } from "./clients.ts";
import { EnrollmentKeys, type InstallTarget, type KeyList, type KeyView } from "./keys.ts";
import { Presence } from "./presence.ts";
import { Registration, type RegisterArgs, type RegistrationOutcome } from "./registration.ts";
import { EnrollmentSettings, type EnrollmentSettingsView } from "./settings.ts";

export type { Binding } from "../../db/enrollment.ts";
export type { ClientView } from "./clients.ts";
export { DEFAULT_MTLS_PORT, type InstallTarget, type KeyList, type KeyView } from "./keys.ts";
export { KEY_IN_USE_WINDOW_MS, type RefusalReason, type RegistrationOutcome } from "./registration.ts";
export type { EnrollmentSettingsView } from "./settings.ts";

export class Enrollment {
  private readonly settings: EnrollmentSettings;
  private readonly keys: EnrollmentKeys;
  private readonly registration: Registration;
  private readonly clients: EnrollmentClients;
  private readonly presence: Presence;

  constructor(
    sql: Sql,
    store: EnrollmentStore,
    settings: SettingsStore,
    audit: Audit,
    events: EventHub,
    clock: Clock,
    stats: Stats,
    presence: { nodes: NodeStore; nodeId: string },
  ) {
    this.settings = new EnrollmentSettings(settings, audit, events);
    this.keys = new EnrollmentKeys(sql, store, audit, events, clock);
    this.presence = new Presence(store, presence.nodes, presence.nodeId, events, clock);
    this.registration = new Registration(sql, store, this.presence, audit, events, clock, stats);
    this.clients = new EnrollmentClients(sql, store, this.presence, audit, events);
  }

  // settings
  getSettings(): Promise<EnrollmentSettingsView> {
    return this.settings.get();
  }
  updateSettings(actor: Actor, changes: { require_auth_key?: boolean | undefined }): Promise<EnrollmentSettingsView> {
    return this.settings.update(actor, changes);
  }

  // keys
  generate(actor: Actor, input: { quantity: number; label: string; expiresAt: number | null; group: string | null }): Promise<KeyView[]> {
    return this.keys.generate(actor, input);
  }
  listKeys(viewer: Principal | null, filter: { status?: KeyStatus | undefined }, limit: number, offset: number): Promise<KeyList> {
    return this.keys.list(viewer, filter, limit, offset);
  }
  getKey(viewer: Principal | null, id: number): Promise<KeyView> {
    return this.keys.get(viewer, id);
  }
  revokeKey(actor: Actor, id: number): Promise<KeyView> {
    return this.keys.revoke(actor, id);
  }
  resetKey(actor: Actor, id: number): Promise<KeyView> {
    return this.keys.reset(actor, id);
  }
  deleteKey(actor: Actor, id: number): Promise<void> {
    return this.keys.delete(actor, id);
  }
  installCommand(id: number, target: InstallTarget): Promise<string> {
    return this.keys.installCommand(id, target);
  }

  // registration
  /** `certified`: the connection presents a valid certificate latchkey issued to this UUID. */
  register(args: RegisterArgs, address: string | null, alreadyConnected: boolean, certified = false): Promise<RegistrationOutcome> {
    return this.registration.register(args, address, alreadyConnected, certified);
  }
  recordRefusal(uuid: string, address: string | null, told: string): Promise<void> {
    return this.registration.recordRefusal(uuid, address, told);
  }

  // clients
  listClients(
    viewer: Principal,
    filter: { status?: "online" | "offline" | undefined; group?: string | undefined },
    limit: number,
    offset: number,
  ): Promise<{ items: ClientView[]; total: number }> {
    return this.clients.list(viewer, filter, limit, offset);
  }
  getClient(viewer: Principal, uuid: string): Promise<ClientView> {
    return this.clients.get(viewer, uuid);
  }
  deleteClient(actor: Actor, uuid: string): Promise<void> {
    return this.clients.delete(actor, uuid);
  }

  // presence
  /** A registered client's socket closed: its last-seen time is written, then `clients.offline` pushed. */
  disconnected(uuid: string, claim: string): Promise<void> {
    return this.presence.disconnected(uuid, claim);
  }
  lostBindings(bound: Binding[]): Promise<Binding[]> {
    return this.presence.lostBindings(bound);
  }
}
