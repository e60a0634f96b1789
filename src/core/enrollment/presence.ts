/**
 * Who is online. A registered client's socket makes it online on the node that holds it, recorded
 * in the database so that every node (and the admin CLI) sees it: a client is online on one node
 * at a time, and a node that dies frees its clients once its lease runs out (core/nodes.ts).
 */
import type { Binding, EnrollmentStore } from "../../db/enrollment.ts";
import type { NodeStore } from "../../db/nodes.ts";
import { systemClock, type Clock } from "../clock.ts";
import type { EventHub } from "../events.ts";

export class Presence {
  constructor(
    private readonly store: EnrollmentStore,
    private readonly nodes: NodeStore,
    private readonly nodeId: string,
    private readonly events: EventHub,
    private readonly clock: Clock,
    /** Leases run on the machines' real clocks, whatever the service clock says (tests move it). */
    private readonly leaseClock: Clock = systemClock,
  ) {}

  /**
   * Marks a registering client online on this node, in the registration's transaction; false when
   * it is online on another node that is alive (a clone there).
   */
  claim(uuid: string, claim: string): Promise<boolean> {
    return this.nodes.claim(uuid, this.nodeId, claim, this.leaseClock());
  }

  /** What a registration made by the store claims (EnrollmentStore.register): this node, its claim, the lease clock's time. */
  claiming(claim: string): { nodeId: string; claim: string; leaseNow: number } {
    return { nodeId: this.nodeId, claim, leaseNow: this.leaseClock() };
  }

  /** Clients online on any live node. */
  online(): Promise<string[]> {
    return this.nodes.online(this.leaseClock());
  }

  /**
   * A registered client's socket closed: its claim is released, its last-seen time written, then
   * `clients.offline` pushed.
   */
  async disconnected(uuid: string, claim: string): Promise<void> {
    // Registered again meanwhile (a reconnect that came first): still online, nothing to say.
    if (!(await this.nodes.release(uuid, claim))) return;
    await this.store.touchClient(uuid, this.clock());
    const client = await this.store.client(uuid);
    this.events.emit("push", { topic: "clients.offline", args: { uuid }, groups: client?.client_group ? [client.client_group] : [] });
  }

  /**
   * Connected clients whose key (the one each was admitted with) was revoked, reset or deleted,
   * by this process or another.
   */
  lostBindings(bound: Binding[]): Promise<Binding[]> {
    return this.store.revokedBindings(bound);
  }
}
