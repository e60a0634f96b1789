/**
 * Who is online. Only the WebSocket layer knows which clients hold a live socket: it attaches its
 * answers here, and tells when a client's socket closes. Until it does, nobody is online (the CLI).
 */
import type { EnrollmentStore } from "../../db/enrollment.ts";
import type { Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";

export class Presence {
  private connected: (uuid: string) => boolean = () => false;
  private connectedList: () => string[] = () => [];

  constructor(
    private readonly store: EnrollmentStore,
    private readonly events: EventHub,
    private readonly clock: Clock,
  ) {}

  attach(isOnline: (uuid: string) => boolean, online: () => string[]): void {
    this.connected = isOnline;
    this.connectedList = online;
  }

  isOnline(uuid: string): boolean {
    return this.connected(uuid);
  }

  online(): string[] {
    return this.connectedList();
  }

  /** A registered client's socket closed: its last-seen time is written, then `clients.offline` pushed. */
  async disconnected(uuid: string): Promise<void> {
    await this.store.touchClient(uuid, this.clock());
    const client = await this.store.client(uuid);
    this.events.emit("push", { topic: "clients.offline", args: { uuid }, groups: client?.client_group ? [client.client_group] : [] });
  }

  /**
   * Connected clients whose key (the one each was admitted with) was revoked, reset or deleted,
   * by this process or another.
   */
  lostBindings(bound: { uuid: string; keyId: number }[]): Promise<string[]> {
    return this.store.revokedBindings(bound);
  }
}
