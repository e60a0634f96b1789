/**
 * This node's lease (SPEC §11): renewed every few seconds while the node runs, so that the clients
 * it holds are online here and nowhere else; when it stops, they are released at once, and when it
 * dies they are free to connect to another node once the lease runs out.
 */
import type { NodeStore } from "../db/nodes.ts";
import type { Clock } from "./clock.ts";

export interface LeaseOptions {
  /** How long a lease runs without renewal (15 s unless said). */
  leaseMs?: number;
  /** Nodes whose lease ran out this long ago are forgotten (an hour unless said). */
  forgetAfterMs?: number;
}

export class NodeLease {
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly leaseMs: number;
  private readonly forgetAfterMs: number;
  /** Until when the last successful renewal holds. */
  private heldUntil = 0;
  /** When the lease was lost (its clients dropped), until a renewal clears their claims; or null. */
  private lostAt: number | null = null;

  constructor(
    private readonly store: NodeStore,
    readonly nodeId: string,
    private readonly clock: Clock,
    options: LeaseOptions = {},
  ) {
    this.leaseMs = options.leaseMs ?? 15_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 3_600_000;
  }

  /** Takes the lease (before the node accepts clients), then renews it every third of its length. */
  async start(onLost: () => void, onError: (error: unknown) => void): Promise<void> {
    await this.renew();
    this.timer = setInterval(() => {
      this.renew().catch((error: unknown) => {
        onError(error);
        // Past the lease, another node may hold this node's clients: drop them, they reconnect.
        if (this.clock() >= this.heldUntil && this.lostAt === null) {
          this.lostAt = this.clock();
          onLost();
        }
      });
    }, this.leaseMs / 3);
    this.timer.unref?.();
  }

  private async renew(): Promise<void> {
    const now = this.clock();
    await this.store.renew(this.nodeId, now, now + this.leaseMs);
    this.heldUntil = now + this.leaseMs;
    // The clients dropped when the lease was lost could not be marked offline then (the database
    // was out of reach): their claims go now, so they may connect to any node.
    if (this.lostAt !== null) {
      await this.store.releaseBefore(this.nodeId, this.lostAt);
      this.lostAt = null;
    }
    await this.store.sweep(now - this.forgetAfterMs);
  }

  /** Gives the lease up: this node's clients are offline and free to connect elsewhere at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.store.remove(this.nodeId);
  }
}
