/**
 * `client/register`, the woho table: with `require_auth_key` off every client is admitted; with it
 * on, a pending key admits the first client and binds to its UUID (pending → active, one
 * conditional UPDATE), an active key readmits only that client, and anything else is refused.
 * A client that holds a valid certificate latchkey issued to it (`client/csr`) and presents it on
 * the mTLS listener is admitted by it, with no key (SPEC §4: a restart is not a re-enrollment).
 * The outcome says why in a word; what the client is told is the protocol's business.
 */
import { randomUUID } from "node:crypto";
import type { EnrollmentStore, KeyRow } from "../../db/enrollment.ts";
import type { Sql } from "../../db/sql.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";
import { sameSecret } from "../secrets.ts";
import { groupScope, type Stats } from "../stats.ts";
import { hashEnrollmentKey, normalizeKey } from "./keys.ts";
import type { Presence } from "./presence.ts";
import type { EnrollmentSettings } from "./settings.ts";

/**
 * How long after a key's binding another UUID presenting it is taken for a machine that raced the
 * winner for the pending key (`key_in_use`: generate a separate key per machine); from then on it
 * is a different machine, e.g. a reinstall with a new UUID (`bound_elsewhere`: reset the key).
 */
export const KEY_IN_USE_WINDOW_MS = 10_000;

/**
 * Why a registration is refused: no key sent; a key unknown, revoked or expired; a key bound to
 * another client; a pending key just won by another client; a clone of a client already online.
 */
export type RefusalReason = "auth_required" | "invalid_key" | "bound_elsewhere" | "key_in_use" | "already_connected";

export interface RegisterArgs {
  uuid: string;
  name: string;
  hostname: string;
  version: string;
  os: string;
  auth_key?: string | undefined;
}

export type RegistrationOutcome =
  | {
      kind: "registered";
      uuid: string;
      group: string | null;
      /** The key was already bound to this client (a reconnect), or no key was needed. */
      reconnect: boolean;
      /** The key this registration was admitted with (null when none was required). */
      keyId: number | null;
      /** Its claim on the client's presence: the socket releases it when it closes. */
      claim: string;
    }
  | { kind: "refused"; reason: RefusalReason };

/**
 * Durable when the registration is answered, but the commit does not hold its rows through its own
 * disk write: the flush that follows is shared with the registrations committed meanwhile (Sql's
 * `releaseBeforeFlush`; on PostgreSQL one disk write per round of registrations, not one each).
 */
const REGISTRATION = { releaseBeforeFlush: true } as const;

/** Thrown inside the transaction so that a refusal rolls back whatever the attempt wrote. */
class Refused extends Error {
  constructor(readonly reason: RefusalReason) {
    super(reason);
  }
}

export class Registration {
  constructor(
    private readonly sql: Sql,
    private readonly store: EnrollmentStore,
    private readonly settings: EnrollmentSettings,
    private readonly presence: Presence,
    private readonly audit: Audit,
    private readonly events: EventHub,
    private readonly clock: Clock,
    private readonly stats: Stats,
  ) {}

  /**
   * Registers a client. `alreadyConnected` tells whether another live socket holds this UUID
   * (a clone): refused, and the first stays connected. A refusal is not audited here: the caller
   * records it with `recordRefusal`, in the words the client was given.
   */
  async register(args: RegisterArgs, address: string | null, alreadyConnected: boolean, certified = false): Promise<RegistrationOutcome> {
    const now = this.clock();
    const claim = randomUUID();
    const refuse = (reason: RefusalReason): never => {
      throw new Refused(reason);
    };
    // The group of the key presented, so that a refusal shows on the charts of its group's viewers.
    let keyGroup: string | null = null;
    // The key is looked up by its secret (hashed here, outside the transaction) before the
    // transaction begins; what it says is decided in the transaction, on the row as it is then.
    const lookup = async (): Promise<KeyRow | null> => {
      if (alreadyConnected) refuse("already_connected");
      if (certified || !(await this.settings.requireAuthKey())) return null;
      if (args.auth_key === undefined || args.auth_key.trim() === "") refuse("auth_required");
      const normalized = normalizeKey(args.auth_key!);
      const found = normalized === null ? null : await this.store.keyByHash(hashEnrollmentKey(normalized));
      keyGroup = found?.client_group ?? null;
      if (!found || !sameSecret(normalizeKey(found.key)!, normalized!) || found.status === "revoked") return refuse("invalid_key");
      return found;
    };
    // The binding, the client row and the audit entry commit together: one durable write per
    // registration, and never a bound key without its client.
    const attempt = async (found: KeyRow | null) => {
      // Online on another node whose lease still runs: a clone there, refused like one here.
      if (!(await this.presence.claim(args.uuid, claim))) refuse("already_connected");
      if (certified) return this.admitCertified(args, address, now);
      let reconnect = true;
      // Re-read in the transaction: since the lookup, a registration in this process or another
      // may have bound the key (the loser of a race then reads it active), or an admin changed it.
      // On SQLite the transaction's write lock holds the row as read; on PostgreSQL (READ
      // COMMITTED) it may still change, so only the conditional UPDATEs below decide, never this read.
      const key = found && (await this.store.key(found.id));
      if (found && (!key || key.status === "revoked")) return refuse("invalid_key");
      if (key) {
        if (key.status === "active") {
          if (key.client_uuid !== args.uuid) refuse(otherClientRefusal(key, now));
          // A restart is not a re-enrollment: the bound client reconnects even after its key's expiry.
          if (!(await this.store.recordReuse(key.id, args.uuid, now))) refuse("invalid_key");
        } else {
          if (key.expires_at !== null && now >= key.expires_at) refuse("invalid_key");
          // Conditional all the same: the affected-row count, not the read above, decides the winner
          // (on PostgreSQL a racer waits for the winner's row lock, then finds the key no longer pending).
          if (!(await this.store.bindPending(key.id, args.uuid, now))) refuse(lostBinding(await this.store.key(key.id), args.uuid, now));
          reconnect = false;
        }
      }
      await this.store.upsertClient({
        uuid: args.uuid,
        name: args.name,
        hostname: args.hostname,
        group: key?.client_group ?? null,
        keyId: key?.id ?? null,
        version: args.version,
        os: args.os,
        address,
        now,
      });
      await this.audit.record({
        actor: `client:${args.uuid}`,
        address,
        action: "client.register",
        target: args.uuid,
        outcome: "success",
        reason: key ? `key ${key.id}${reconnect ? " (reconnect)" : " bound"}` : "no key required",
      });
      return { key, reconnect, client: (await this.store.client(args.uuid))! };
    };
    let admitted: Awaited<ReturnType<typeof attempt>>;
    try {
      const key = await lookup();
      admitted = await this.sql.transaction(() => attempt(key), REGISTRATION);
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      this.stats.count("registrations_refused", 1, keyGroup === null ? [] : [groupScope(keyGroup)], now);
      return { kind: "refused", reason: error.reason };
    }
    const { key, reconnect, client } = admitted;
    this.stats.count("registrations_ok", 1, client.client_group === null ? [] : [groupScope(client.client_group)], now);
    this.events.emit("push", {
      topic: "clients.online",
      args: { uuid: args.uuid, name: args.name, group: client.client_group },
      groups: client.client_group ? [client.client_group] : [],
    });
    if (key && !reconnect)
      this.events.emit("push", {
        topic: "keys.changed",
        args: { ids: [key.id], change: "bound" },
        groups: key.client_group ? [key.client_group] : [],
      });
    return { kind: "registered", uuid: args.uuid, group: client.client_group, reconnect, keyId: key?.id ?? null, claim };
  }

  /**
   * Readmits an enrolled client by its certificate (the caller checked that it was issued to this
   * UUID and is valid): the client keeps its group and key, whose use is counted while it is
   * active for it; a client deleted, or whose key was revoked meanwhile, is refused.
   */
  private async admitCertified(args: RegisterArgs, address: string | null, now: number) {
    const client = await this.store.client(args.uuid);
    if (!client) throw new Refused("invalid_key");
    const key = client.key_id === null ? null : await this.store.key(client.key_id);
    // Conditional: the key's state when the UPDATE runs decides, not the read above.
    if (key && !(await this.store.recordReuse(key.id, args.uuid, now))) throw new Refused("invalid_key");
    await this.store.upsertClient({
      uuid: args.uuid,
      name: args.name,
      hostname: args.hostname,
      group: client.client_group,
      keyId: client.key_id,
      version: args.version,
      os: args.os,
      address,
      now,
    });
    await this.audit.record({
      actor: `client:${args.uuid}`,
      address,
      action: "client.register",
      target: args.uuid,
      outcome: "success",
      reason: "certificate (reconnect)",
    });
    return { key, reconnect: true, client: (await this.store.client(args.uuid))! };
  }

  /** Audits a refused registration; `told` is what the client was told, which the audit log repeats. */
  async recordRefusal(uuid: string, address: string | null, told: string): Promise<void> {
    await this.audit.record({
      actor: `client:${uuid}`,
      address,
      action: "client.register",
      target: uuid,
      outcome: "failure",
      reason: told,
    });
  }
}

/**
 * Why a pending key read in the transaction could not be bound after all: on PostgreSQL another
 * transaction may have changed it since the read (it cannot on SQLite). Told as the key stands now.
 */
function lostBinding(key: KeyRow | null, uuid: string, now: number): RefusalReason {
  if (!key || key.status === "revoked") return "invalid_key";
  return key.status === "active" && key.client_uuid !== uuid ? otherClientRefusal(key, now) : "key_in_use";
}

/**
 * What another UUID presenting an active key is told: within `KEY_IN_USE_WINDOW_MS` of the
 * binding (`first_used_at`, set afresh by every pending → active step, so a reset key's next
 * binding opens a new window) it lost a race for the pending key, later the key is simply taken.
 */
function otherClientRefusal(key: KeyRow, now: number): RefusalReason {
  return key.first_used_at !== null && now - key.first_used_at < KEY_IN_USE_WINDOW_MS ? "key_in_use" : "bound_elsewhere";
}
