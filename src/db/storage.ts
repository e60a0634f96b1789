/**
 * The storage core uses: statements and transactions (`sql`), a signal that someone else wrote
 * (another process on the same SQLite file, another node on the same PostgreSQL database), a
 * health check and an orderly close. `openStorage` picks the backend: PostgreSQL when a
 * `postgres://` URL is given, otherwise SQLite in the data directory.
 */
import type { Database } from "bun:sqlite";
import { randomUUID } from "node:crypto";
import { DataVersion } from "./data-version.ts";
import { openDatabase } from "./open.ts";
import { migratePostgres } from "./postgres/migrate.ts";
import { PostgresSql, SqliteSql, type Dialect, type Sql } from "./sql.ts";

export interface Health {
  ok: boolean;
  backend: Dialect;
  /** "ok", or what went wrong. */
  detail: string;
}

/** An event for the panels and sockets of every node (`push` on the local event hub). */
export interface Broadcast {
  topic: string;
  args: Record<string, unknown>;
  groups?: string[] | undefined;
}

export interface Storage {
  readonly sql: Sql;
  readonly dialect: Dialect;
  /** This process's id among the nodes sharing the database (node leases, presence). */
  readonly nodeId: string;
  /**
   * A new watcher: each call of the function it returns says whether anyone else has committed
   * since that watcher last said so (cheap enough to call on every request).
   */
  watchOtherWriters(): () => boolean;
  /**
   * Hands `event` to the other nodes' `onBroadcast` listeners (PostgreSQL NOTIFY, sent with the
   * events of the next few milliseconds, whether or not a transaction is open). With SQLite there
   * are no other nodes.
   */
  broadcast(event: Broadcast): Promise<void>;
  onBroadcast(listener: (event: Broadcast) => void): void;
  health(): Promise<Health>;
  close(): Promise<void>;
}

/** A trivial statement: the database answers, or what went wrong. */
async function probe(sql: Sql): Promise<Health> {
  try {
    await sql.get("SELECT 1 AS ok");
    return { ok: true, backend: sql.dialect, detail: "ok" };
  } catch (error) {
    return { ok: false, backend: sql.dialect, detail: `error: ${(error as Error).message}` };
  }
}

class SqliteStorage implements Storage {
  readonly dialect = "sqlite";
  readonly nodeId = randomUUID();
  readonly sql: SqliteSql;
  private readonly version;

  constructor(readonly db: Database) {
    this.sql = new SqliteSql(db);
    this.version = db.query<{ data_version: number }, []>("PRAGMA data_version");
  }

  watchOtherWriters(): () => boolean {
    const watcher = new DataVersion(() => this.version.get()!.data_version);
    return () => watcher.changed();
  }

  async broadcast(): Promise<void> {}

  onBroadcast(): void {}

  health(): Promise<Health> {
    return probe(this.sql);
  }

  async close(): Promise<void> {
    this.db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    this.db.close();
  }
}

/** NOTIFY channels: table changes (migration 0010's triggers) and broadcast events. */
const CHANGES = "latchkey_changes";
const EVENTS = "latchkey_events";
/** How long an event waits for others to share its notification. */
const BROADCAST_DELAY_MS = 20;
/** One event's JSON at most: a notification's payload stops short of 8000 bytes, with room for the envelope. */
const MAX_EVENT_BYTES = 7_800;

class PostgresStorage implements Storage {
  readonly dialect = "postgres";
  readonly sql: PostgresSql;
  /** Changes other writers committed (counted from their notifications). */
  private changes = 0;
  private readonly listeners: ((event: Broadcast) => void)[] = [];
  /** Events waiting to be broadcast (JSON), and the send they wait for. */
  private outbox: string[] = [];
  private sending: Promise<void> | null = null;

  constructor(
    readonly client: Bun.SQL,
    private readonly listener: Bun.SQL,
    readonly nodeId: string,
    /** application_name of this node's connections: how its own notifications are told apart. */
    private readonly writer: string,
  ) {
    this.sql = new PostgresSql(client);
  }

  /** Subscribes to both channels on the listening connection. */
  async listen(): Promise<void> {
    await this.listener.listen(
      CHANGES,
      (payload: string) => {
        if (payload.slice(payload.indexOf(" ") + 1) !== this.writer) this.changes++;
      },
      // Subscribed again after the connection dropped (PostgreSQL restarting): whatever was
      // committed meanwhile went unheard, so everything counts as changed.
      () => this.changes++,
    );
    await this.listener.listen(EVENTS, (payload: string) => {
      const { from, events } = JSON.parse(payload) as { from: string; events: Broadcast[] };
      if (from === this.writer) return;
      for (const event of events) for (const listener of this.listeners) listener(event);
    });
  }

  watchOtherWriters(): () => boolean {
    let seen = this.changes;
    return () => {
      if (seen === this.changes) return false;
      seen = this.changes;
      return true;
    };
  }

  /**
   * Events wait up to BROADCAST_DELAY_MS and leave together: one statement of notifications for
   * everything emitted meanwhile. A commit that notifies takes PostgreSQL's cluster-wide notify
   * lock; one per event would make a stream of activations queue on it.
   */
  broadcast(event: Broadcast): Promise<void> {
    const json = JSON.stringify(event);
    // NOTIFY payloads stop at 8000 bytes; an event that large is not worth sending to panels.
    if (Buffer.byteLength(json) > MAX_EVENT_BYTES) return Promise.resolve();
    this.outbox.push(json);
    // Outside any transaction open here: the notifications are not this transaction's to send.
    this.sending ??= this.sql.outside(() => Bun.sleep(BROADCAST_DELAY_MS).then(() => this.sendOutbox()));
    return this.sending;
  }

  private async sendOutbox(): Promise<void> {
    const events = this.outbox;
    this.outbox = [];
    this.sending = null;
    const payloads: string[] = [];
    let batch: string[] = [];
    let bytes = 0;
    for (const json of events) {
      const size = Buffer.byteLength(json) + 1;
      if (batch.length > 0 && bytes + size > MAX_EVENT_BYTES) (payloads.push(this.envelope(batch)), (batch = []), (bytes = 0));
      batch.push(json);
      bytes += size;
    }
    if (batch.length > 0) payloads.push(this.envelope(batch));
    // One statement, so one transaction: no round trips while it is open. It writes no WAL, so its
    // commit waits for no disk.
    await this.sql.run(
      `SELECT pg_notify(?, p.payload) FROM (SELECT payload FROM jsonb_array_elements_text(CAST(? AS text)::jsonb)
         WITH ORDINALITY AS e (payload, n) ORDER BY n) p`,
      [EVENTS, JSON.stringify(payloads)],
    );
  }

  private envelope(events: string[]): string {
    return `{"from":${JSON.stringify(this.writer)},"events":[${events.join(",")}]}`;
  }

  onBroadcast(listener: (event: Broadcast) => void): void {
    this.listeners.push(listener);
  }

  health(): Promise<Health> {
    return probe(this.sql);
  }

  async close(): Promise<void> {
    await this.listener.close().catch(() => undefined);
    await this.client.close();
  }
}

/** SQLite in `dataDir` (created when asked), migrated. */
export function openSqliteStorage(dataDir: string, options: { create: boolean }): Storage {
  return new SqliteStorage(openDatabase(dataDir, options));
}

/** The bun:sqlite handle under a SQLite storage (backups, the CLI's maintenance), or null. */
export function sqliteHandle(storage: Storage): Database | null {
  return storage instanceof SqliteStorage ? storage.db : null;
}

/** The Bun.SQL pool under a PostgreSQL storage (`db copy`), or null. */
export function postgresClient(storage: Storage): Bun.SQL | null {
  return storage instanceof PostgresStorage ? storage.client : null;
}

/** The URL with its password hidden, for messages. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(the given URL)";
  }
}

/** PostgreSQL at `url` (a pool through Bun.SQL), migrated. */
export async function openPostgresStorage(url: string): Promise<Storage> {
  const nodeId = randomUUID();
  const writer = `latchkey-${nodeId}`;
  const client = new Bun.SQL(url, {
    bigint: true,
    max: 20,
    idleTimeout: 30,
    connectionTimeout: 10,
    connection: { application_name: writer },
  });
  const listener = new Bun.SQL(url, { max: 1, connectionTimeout: 10, connection: { application_name: `${writer}-listen` } });
  try {
    await migratePostgres(client);
    const storage = new PostgresStorage(client, listener, nodeId, writer);
    await storage.listen();
    return storage;
  } catch (error) {
    await listener.close().catch(() => undefined);
    await client.close().catch(() => undefined);
    throw new Error(
      `cannot use PostgreSQL at ${redactedUrl(url)}: ${(error as Error).message}; ` +
        "check the URL, that the server runs and accepts this host, and the user's rights",
      { cause: error },
    );
  }
}
