/**
 * `client/register`, the woho table: with `require_auth_key` off every client is admitted; with it
 * on, a pending key admits the first client and binds to its UUID (pending → active, one
 * conditional UPDATE), an active key readmits only that client, and anything else is refused.
 * A client that holds a valid certificate latchkey issued to it (`client/csr`) and presents it on
 * the mTLS listener is admitted by it, with no key (SPEC §4: a restart is not a re-enrollment).
 * The outcome says why in a word; what the client is told is the protocol's business.
 */
import { randomUUID } from "node:crypto";
import type { EnrollmentStore, RegisteringOutcome, RegistrationRefusal } from "../../db/enrollment.ts";
import type { Sql } from "../../db/sql.ts";
import type { Audit } from "../audit.ts";
import type { Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";
import { groupScope, type Stats } from "../stats.ts";
import { hashEnrollmentKey, normalizeKey } from "./keys.ts";
import type { Presence } from "./presence.ts";

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
export type RefusalReason = RegistrationRefusal;

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

/** The audit reason of a registration admitted by its certificate. */
const CERTIFIED = "certificate (reconnect)";

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
    let outcome: RegisteringOutcome;
    if (alreadyConnected) outcome = { kind: "refused", reason: "already_connected", keyGroup: null };
    else if (certified) outcome = await this.admitCertified(args, address, now, claim);
    else {
      // The setting, the key's state and the client's presence are judged by the store, in the
      // statements that write the registration (one call on PostgreSQL).
      // The key goes down as its hash only.
      const { auth_key: sent, ...client } = args;
      const blank = sent === undefined || sent.trim() === "";
      const normalized = blank ? null : normalizeKey(sent);
      outcome = await this.store.register({
        ...client,
        address,
        now,
        key: blank ? null : { hash: normalized === null ? null : hashEnrollmentKey(normalized) },
        presence: this.presence.claiming(claim),
        keyInUseMs: KEY_IN_USE_WINDOW_MS,
      });
      if (outcome.kind === "registered") {
        this.audit.announce({
          actor: `client:${args.uuid}`,
          address,
          action: "client.register",
          target: args.uuid,
          outcome: "success",
          reason: outcome.auditReason,
        });
      }
    }
    if (outcome.kind === "refused") {
      // Shown on the charts of the group of the key presented.
      this.stats.count("registrations_refused", 1, outcome.keyGroup === null ? [] : [groupScope(outcome.keyGroup)], now);
      return { kind: "refused", reason: outcome.reason };
    }
    const { clientGroup: group, keyId, keyGroup, reconnect } = outcome;
    this.stats.count("registrations_ok", 1, group === null ? [] : [groupScope(group)], now);
    this.events.emit("push", {
      topic: "clients.online",
      args: { uuid: args.uuid, name: args.name, group },
      groups: group ? [group] : [],
    });
    if (keyId !== null && !reconnect)
      this.events.emit("push", { topic: "keys.changed", args: { ids: [keyId], change: "bound" }, groups: keyGroup ? [keyGroup] : [] });
    return { kind: "registered", uuid: args.uuid, group, reconnect, keyId, claim };
  }

  /**
   * Readmits an enrolled client by its certificate (the caller checked that it was issued to this
   * UUID and is valid): the client keeps its group and key, whose use is counted while it is
   * active for it; a client deleted, or whose key was revoked meanwhile, is refused.
   */
  private async admitCertified(args: RegisterArgs, address: string | null, now: number, claim: string): Promise<RegisteringOutcome> {
    const attempt = async (): Promise<RegisteringOutcome> => {
      const client = await this.store.client(args.uuid);
      if (!client) throw new Refused("invalid_key");
      // Online on another node whose lease still runs: a clone there, refused like one here.
      if (!(await this.presence.claim(args.uuid, claim))) throw new Refused("already_connected");
      const key = client.key_id === null ? null : await this.store.key(client.key_id);
      // Conditional: the key's state when the UPDATE runs decides, not the read above.
      if (key && !(await this.store.recordReuse(key.id, args.uuid, now))) throw new Refused("invalid_key");
      const group = await this.store.upsertClient({ ...args, group: client.client_group, keyId: client.key_id, address, now });
      await this.audit.record({
        actor: `client:${args.uuid}`,
        address,
        action: "client.register",
        target: args.uuid,
        outcome: "success",
        reason: CERTIFIED,
      });
      return {
        kind: "registered",
        reconnect: true,
        keyId: key?.id ?? null,
        keyGroup: key?.client_group ?? null,
        clientGroup: group,
        auditReason: CERTIFIED,
      };
    };
    try {
      return await this.sql.transaction(attempt, REGISTRATION);
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      return { kind: "refused", reason: error.reason, keyGroup: null };
    }
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
