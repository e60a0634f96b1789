/**
 * The throwaway PostgreSQL cluster of test/postgres.ts, and what latchkey's PostgreSQL backend will
 * rely on in Bun's built-in SQL client (`Bun.SQL`): a connection, a conditional update whose
 * affected-row count picks one winner among racing transactions, and LISTEN/NOTIFY across
 * connections.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { eventually } from "./support.ts";
import { startPostgres, type PostgresCluster } from "./postgres.ts";

let cluster: PostgresCluster;
let sql: InstanceType<typeof Bun.SQL>;

beforeAll(async () => {
  cluster = await startPostgres();
  sql = new Bun.SQL(cluster.url, { max: 20 });
}, 60_000);

afterAll(async () => {
  await sql?.close();
  await cluster?.stop();
});

test("a cluster of its own, as the postgres user, on a free port of 127.0.0.1", async () => {
  const [row] = await sql`SELECT version() AS version, current_user AS who, inet_server_port() AS port`;
  expect(row.version).toStartWith("PostgreSQL 15");
  expect(row.who).toBe("latchkey");
  expect(row.port).toBe(cluster.port);
  expect(cluster.url).toBe(`postgres://latchkey@127.0.0.1:${cluster.port}/postgres`);
});

test("one winner of 50 racing conditional updates, decided by the affected-row count", async () => {
  await sql`CREATE TABLE race (id int PRIMARY KEY, status text NOT NULL, owner text)`;
  for (let round = 0; round < 5; round++) {
    await sql`INSERT INTO race VALUES (${round}, 'pending', NULL)`;
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const result = await sql`UPDATE race SET status = 'active', owner = ${`client-${i}`} WHERE id = ${round} AND status = 'pending'`;
        return result.count;
      }),
    );
    expect(outcomes.filter((n) => n === 1)).toHaveLength(1);
    expect(outcomes.filter((n) => n === 0)).toHaveLength(49);
    const [row] = await sql`SELECT status, owner FROM race WHERE id = ${round}`;
    expect(row.status).toBe("active");
    expect(outcomes[Number(row.owner.slice("client-".length))]).toBe(1);
  }
});

test("LISTEN/NOTIFY reaches a listener on another connection, in order", async () => {
  const received: string[] = [];
  const listener = new Bun.SQL(cluster.url, { max: 1 });
  try {
    await listener.listen("latchkey_events", (payload: string) => void received.push(payload));
    for (let i = 0; i < 20; i++) await sql`SELECT pg_notify('latchkey_events', ${`revoked ${i}`})`;
    await eventually(() => received.length === 20, { what: () => `20 notifications; got ${JSON.stringify(received)}` });
    expect(received).toEqual(Array.from({ length: 20 }, (_, i) => `revoked ${i}`));
  } finally {
    await listener.close();
  }
});

test("stop() ends the server and removes its directory", async () => {
  const other = await startPostgres();
  const client = new Bun.SQL(other.url, { max: 1, connectionTimeout: 2 });
  expect((await client`SELECT 1 AS one`)[0].one).toBe(1);
  await client.close();
  await other.stop();
  expect(existsSync(other.dir)).toBe(false);
  const late = new Bun.SQL(other.url, { max: 1, connectionTimeout: 2 });
  await expect(late`SELECT 1`).rejects.toThrow();
  await late.close();
}, 60_000);
