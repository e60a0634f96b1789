import type { Sql } from "./sql.ts";

/**
 * Marks a client online on `nodeId`, unless a node whose lease still runs at `now` holds it: one
 * statement, so that of two nodes claiming one client at once exactly one wins. In the caller's
 * transaction when there is one (NodeStore's, and a registration's).
 */
export async function claimPresence(sql: Sql, uuid: string, nodeId: string, claim: string, now: number): Promise<boolean> {
  const changed = await sql.run(
    `INSERT INTO client_presence (uuid, node_id, claim, since) VALUES (?, ?, ?, ?)
     ON CONFLICT (uuid) DO UPDATE SET node_id = excluded.node_id, claim = excluded.claim, since = excluded.since
     WHERE client_presence.node_id = excluded.node_id
        OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = client_presence.node_id AND n.lease_until > ?)`,
    [uuid, nodeId, claim, now, now],
  );
  return changed === 1;
}

/** Queries over `nodes` and `client_presence` (migration 0010). */
export class NodeStore {
  constructor(private readonly sql: Sql) {}

  /** Starts or extends a node's lease (inserted again if a peer swept it away meanwhile). */
  async renew(id: string, now: number, leaseUntil: number): Promise<void> {
    await this.sql.run(
      "INSERT INTO nodes (id, started_at, lease_until) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
      [id, now, leaseUntil],
    );
  }

  /** A node that stops: its clients are free at once. */
  async remove(id: string): Promise<void> {
    await this.sql.run("DELETE FROM nodes WHERE id = ?", [id]);
  }

  /** Forgets nodes whose lease ran out before `before`, and with them the clients they held. */
  async sweep(before: number): Promise<number> {
    return this.sql.run("DELETE FROM nodes WHERE lease_until < ?", [before]);
  }

  /** See claimPresence. */
  claim(uuid: string, nodeId: string, claim: string, now: number): Promise<boolean> {
    return claimPresence(this.sql, uuid, nodeId, claim, now);
  }

  /** Ends one registration's claim (a newer registration of the client holds its own). */
  async release(uuid: string, claim: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM client_presence WHERE uuid = ? AND claim = ?", [uuid, claim])) === 1;
  }

  /** Ends this node's claims made before `before` (those of the sockets it dropped when it lost its lease). */
  async releaseBefore(nodeId: string, before: number): Promise<number> {
    return this.sql.run("DELETE FROM client_presence WHERE node_id = ? AND since < ?", [nodeId, before]);
  }

  /** Clients online on a node whose lease still runs. */
  async online(now: number): Promise<string[]> {
    const rows = await this.sql.all<{ uuid: string }>(
      "SELECT p.uuid FROM client_presence p JOIN nodes n ON n.id = p.node_id WHERE n.lease_until > ?",
      [now],
    );
    return rows.map((r) => r.uuid);
  }
}
