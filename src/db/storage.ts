/**
 * The storage core uses: statements and transactions (`sql`), a signal that someone else wrote
 * (another process on the same SQLite file, another node on the same PostgreSQL database), a
 * health check and an orderly close. `openStorage` picks the backend: PostgreSQL when a
 * `postgres://` URL is given, otherwise SQLite in the data directory.
 */
import type { Database } from "bun:sqlite";
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

export interface Storage {
  readonly sql: Sql;
  readonly dialect: Dialect;
  /**
   * A new watcher: each call of the function it returns says whether anyone else has committed
   * since that watcher last said so (cheap enough to call on every request).
   */
  watchOtherWriters(): () => boolean;
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

  health(): Promise<Health> {
    return probe(this.sql);
  }

  async close(): Promise<void> {
    this.db.run("PRAGMA wal_checkpoint(TRUNCATE)");
    this.db.close();
  }
}

class PostgresStorage implements Storage {
  readonly dialect = "postgres";
  readonly sql: PostgresSql;

  constructor(readonly client: Bun.SQL) {
    this.sql = new PostgresSql(client);
  }

  watchOtherWriters(): () => boolean {
    return () => false;
  }

  health(): Promise<Health> {
    return probe(this.sql);
  }

  async close(): Promise<void> {
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

/** PostgreSQL at `url` (a pool through Bun.SQL), migrated. */
export async function openPostgresStorage(url: string): Promise<Storage> {
  const client = new Bun.SQL(url, { bigint: true, max: 20, idleTimeout: 30, connectionTimeout: 10 });
  try {
    await migratePostgres(client);
  } catch (error) {
    await client.close().catch(() => undefined);
    throw error;
  }
  return new PostgresStorage(client);
}
