/** Enrolled clients: listed and read (viewers only within their groups), and deleted with their key. */
import type { ClientRow, EnrollmentStore } from "../../db/enrollment.ts";
import type { Sql } from "../../db/sql.ts";
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
    private readonly sql: Sql,
    private readonly store: EnrollmentStore,
    private readonly presence: Presence,
    private readonly audit: Audit,
    private readonly events: EventHub,
  ) {}

  async list(
    viewer: Principal,
    filter: { status?: "online" | "offline" | undefined; group?: string | undefined },
    limit: number,
    offset: number,
  ): Promise<{ items: ClientView[]; total: number }> {
    const online = await this.presence.online();
    const scoped = {
      group: filter.group,
      groups: viewer.role === "admin" ? undefined : viewer.groups,
      ...(filter.status === "online" ? { uuids: online } : filter.status === "offline" ? { excludeUuids: online } : {}),
    };
    const [rows, total] = await Promise.all([this.store.clients(scoped, limit, offset), this.store.countClients(scoped)]);
    const isOnline = new Set(online);
    return { items: rows.map((c) => this.view(c, isOnline)), total };
  }

  async get(viewer: Principal, uuid: string): Promise<ClientView> {
    const client = await this.store.client(uuid);
    if (!client || (viewer.role !== "admin" && (client.client_group === null || !viewer.groups.includes(client.client_group)))) {
      throw notFound(`no client ${uuid}`);
    }
    return this.view(client, new Set(await this.presence.online()));
  }

  /** Deletes a client: its key and certificates are revoked with it and its connection closed. */
  async delete(actor: Actor, uuid: string): Promise<void> {
    // One transaction with its audit entry; the deletion's changed row decides whether there was a
    // client to delete (of two deletions at once, the second finds none and revokes nothing).
    const client = await this.sql.transaction(async () => {
      const revoked = await this.store.revokeKeysOf(uuid);
      const deleted = await this.store.deleteClient(uuid);
      if (!deleted) throw notFound(`no client ${uuid}`);
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "client.delete",
        target: uuid,
        outcome: "success",
        reason: revoked.length ? `revoked key ${revoked.join(", ")}` : null,
      });
      return deleted;
    });
    this.events.emit("clients.kick", { uuids: [uuid], reason: CLIENT_GONE, actor });
    this.events.emit("push", { topic: "clients.deleted", args: { uuid }, groups: client.client_group ? [client.client_group] : [] });
  }

  private view(c: ClientRow, online: ReadonlySet<string>): ClientView {
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
      online: online.has(c.uuid),
      first_seen_at: isoTime(c.first_seen_at),
      last_seen_at: isoTime(c.last_seen_at),
    };
  }
}
