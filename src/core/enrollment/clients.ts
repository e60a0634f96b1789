/** Enrolled clients: listed and read (viewers only within their groups), and deleted with their key. */
import type { Database } from "bun:sqlite";
import type { ClientRow, EnrollmentStore } from "../../db/enrollment.ts";
import { immediate } from "../../db/open.ts";
import type { Actor } from "../accounts.ts";
import type { Audit } from "../audit.ts";
import { notFound } from "../errors.ts";
import type { EventHub } from "../events.ts";
import { isoTime } from "../fields.ts";
import type { Principal } from "../sessions.ts";
import type { Presence } from "./presence.ts";
import type { RefusalReason } from "./registration.ts";

export interface ClientView {
  uuid: string;
  name: string;
  hostname: string;
  group: string | null;
  key_id: number | null;
  version: string;
  os: string;
  address: string | null;
  interfaces: { name: string; addresses: string[] }[];
  online: boolean;
  first_seen_at: string;
  last_seen_at: string;
}

/** What a deleted client is told as its socket closes: its key is revoked with it. */
const CLIENT_GONE: RefusalReason = "invalid_key";

export class EnrollmentClients {
  constructor(
    private readonly db: Database,
    private readonly store: EnrollmentStore,
    private readonly presence: Presence,
    private readonly audit: Audit,
    private readonly events: EventHub,
  ) {}

  list(
    viewer: Principal,
    filter: { status?: "online" | "offline" | undefined; group?: string | undefined },
    limit: number,
    offset: number,
  ): { items: ClientView[]; total: number } {
    const online = this.presence.online();
    const scoped = {
      group: filter.group,
      groups: viewer.role === "admin" ? undefined : viewer.groups,
      ...(filter.status === "online" ? { uuids: online } : filter.status === "offline" ? { excludeUuids: online } : {}),
    };
    return { items: this.store.clients(scoped, limit, offset).map((c) => this.view(c)), total: this.store.countClients(scoped) };
  }

  get(viewer: Principal, uuid: string): ClientView {
    const client = this.store.client(uuid);
    if (!client || (viewer.role !== "admin" && (client.client_group === null || !viewer.groups.includes(client.client_group)))) {
      throw notFound(`no client ${uuid}`);
    }
    return this.view(client);
  }

  /** Deletes a client: its key and certificates are revoked with it and its connection closed. */
  delete(actor: Actor, uuid: string): void {
    const client = this.store.client(uuid);
    if (!client) throw notFound(`no client ${uuid}`);
    const revoked = immediate(this.db, () => {
      const ids = this.store.revokeKeysOf(uuid);
      this.store.deleteClient(uuid);
      return ids;
    });
    this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "client.delete",
      target: uuid,
      outcome: "success",
      reason: revoked.length ? `revoked key ${revoked.join(", ")}` : null,
    });
    this.events.emit("clients.kick", { uuids: [uuid], reason: CLIENT_GONE, actor });
    this.events.emit("push", { topic: "clients.deleted", args: { uuid }, groups: client.client_group ? [client.client_group] : [] });
  }

  private view(c: ClientRow): ClientView {
    return {
      uuid: c.uuid,
      name: c.name,
      hostname: c.hostname,
      group: c.client_group,
      key_id: c.key_id,
      version: c.version,
      os: c.os,
      address: c.address,
      interfaces: JSON.parse(c.interfaces) as ClientView["interfaces"],
      online: this.presence.isOnline(c.uuid),
      first_seen_at: isoTime(c.first_seen_at),
      last_seen_at: isoTime(c.last_seen_at),
    };
  }
}
