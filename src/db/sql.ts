/**
 * The one way the stores talk to a database, whichever it is: `get`, `all` and `run` with `?`
 * placeholders, and `transaction`. Two implementations: bun:sqlite (the embedded default, one
 * connection in this process) and PostgreSQL through Bun's built-in client (`Bun.SQL`, a pool).
 *
 * A statement issued while a `transaction` callback runs (anywhere below it, however many calls
 * deep) runs in that transaction: the transaction travels with the async context, so the stores
 * need no transaction argument.
 */
import type { Database } from "bun:sqlite";
import { AsyncLocalStorage } from "node:async_hooks";
import { open } from "node:fs/promises";

export type Param = string | number | boolean | null | Uint8Array;
export type Dialect = "sqlite" | "postgres";

export interface TransactionOptions {
  /**
   * False for writes that may be lost in a power cut (batched counters, host reports): the commit
   * does not wait for the disk. Durable unless said.
   */
  durable?: boolean;
  /**
   * Durable all the same, but the locks are let go before the disk write: for transactions that
   * queue on one row (a license key's seats). PostgreSQL commits without waiting for the disk,
   * which releases the row at once, then writes a one-record transaction that waits for it: its
   * flush carries the WAL up to and past this commit, so when `transaction` returns, this commit
   * is on disk, as with an ordinary durable one. Meanwhile others may read what it wrote (then a
   * crash would take their work along with it, and neither was acknowledged yet). The flushes of
   * transactions at once share one disk write; commits holding the row would each wait for
   * their own. SQLite commits without syncing (`synchronous = NORMAL`), which lets the database's
   * write lock go at once, then syncs its write-ahead log, which holds the commit: the same
   * guarantee as a FULL commit, and the syncs of the transactions committed meanwhile are one.
   */
  releaseBeforeFlush?: boolean;
}

export interface Sql {
  readonly dialect: Dialect;
  /** The first row, or null. */
  get<T>(text: string, params?: readonly Param[]): Promise<T | null>;
  all<T>(text: string, params?: readonly Param[]): Promise<T[]>;
  /** The number of rows the statement changed. */
  run(text: string, params?: readonly Param[]): Promise<number>;
  /**
   * Runs `fn` in one transaction that takes the write lock up front (SQLite `BEGIN IMMEDIATE`;
   * PostgreSQL's row locks and conditional statements do the same job). A transaction begun inside
   * another joins it.
   */
  transaction<T>(fn: () => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Waits until every commit made so far is on disk: after a commit that did not wait for it (see
   * `releaseBeforeFlush`). PostgreSQL writes a one-record transaction durably, whose flush covers
   * all the WAL before it; SQLite syncs its write-ahead log file. Concurrent flushes share a disk
   * write (SharedFlush).
   */
  flush(): Promise<void>;
}

/**
 * Flushes that share: a caller arriving while one runs waits for the next, which begins once that
 * one ends (the running one may have begun before the caller's commit), and every caller arriving
 * meanwhile waits for that same next one. So concurrent requests need one disk write per round,
 * not one each.
 */
export class SharedFlush {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(private readonly once: () => Promise<void>) {}

  request(): Promise<void> {
    if (this.running === null) return this.start();
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = null;
        return this.start();
      });
    return this.next;
  }

  private start(): Promise<void> {
    const run: Promise<void> = this.once().finally(() => {
      if (this.running === run) this.running = null;
    });
    this.running = run;
    return run;
  }
}

/** Thrown when the database cannot be reached; rendered as 503 with Retry-After. */
export class DatabaseUnavailable extends Error {
  constructor(cause: unknown) {
    super("the database is unavailable", { cause });
    this.name = "DatabaseUnavailable";
  }
}

interface SqliteTransaction {
  done: Promise<void>;
}

/**
 * bun:sqlite behind the async interface. Statements are synchronous; a transaction may await
 * between them, and meanwhile other callers' statements wait until it ends (they would otherwise
 * run inside it, on the same connection).
 */
export class SqliteSql implements Sql {
  readonly dialect = "sqlite";
  private readonly context = new AsyncLocalStorage<SqliteTransaction>();
  private open: SqliteTransaction | null = null;

  constructor(readonly db: Database) {}

  /** True when a statement now would land in someone else's open transaction. */
  private blocked(): boolean {
    return this.open !== null && this.context.getStore() !== this.open;
  }

  private async turn(): Promise<void> {
    while (this.blocked()) await this.open!.done;
  }

  async get<T>(text: string, params: readonly Param[] = []): Promise<T | null> {
    if (this.blocked()) await this.turn();
    return (this.db.query(text).get(...(params as Param[])) as T | null) ?? null;
  }

  async all<T>(text: string, params: readonly Param[] = []): Promise<T[]> {
    if (this.blocked()) await this.turn();
    return this.db.query(text).all(...(params as Param[])) as T[];
  }

  async run(text: string, params: readonly Param[] = []): Promise<number> {
    if (this.blocked()) await this.turn();
    return this.db.query(text).run(...(params as Param[])).changes;
  }

  /** Syncs the write-ahead log file, where every commit so far is (WAL mode); shared (SharedFlush). */
  flush(): Promise<void> {
    return this.walSync.request();
  }

  private readonly walSync = new SharedFlush(async () => {
    // No log file yet (nothing written) or an in-memory database: nothing to sync.
    const wal = await open(`${this.db.filename}-wal`, "r").catch(() => null);
    if (wal === null) return;
    try {
      await wal.sync();
    } finally {
      await wal.close();
    }
  });

  async transaction<T>(fn: () => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    if (this.open !== null && this.context.getStore() === this.open) return fn();
    // Checked and claimed in one synchronous stretch: no other waiter can slip in between.
    while (this.open !== null) await this.open.done;
    let end!: () => void;
    const tx: SqliteTransaction = { done: new Promise<void>((resolve) => (end = resolve)) };
    this.open = tx;
    const flushAfter = options.releaseBeforeFlush === true && options.durable !== false;
    const unsynced = options.durable === false || flushAfter;
    let result: T;
    try {
      if (unsynced) this.db.run("PRAGMA synchronous = NORMAL");
      this.db.run("BEGIN IMMEDIATE");
      try {
        result = await this.context.run(tx, fn);
        this.db.run("COMMIT");
      } catch (error) {
        if (this.db.inTransaction) this.db.run("ROLLBACK");
        throw error;
      }
    } finally {
      if (unsynced) this.db.run("PRAGMA synchronous = FULL");
      this.open = null;
      end();
    }
    // The write lock is let go; the log is synced with the commits made meanwhile.
    if (flushAfter) await this.flush();
    return result;
  }
}

/** `?` and `?N` placeholders outside quotes become `$N`; cached per statement text. */
const translated = new Map<string, string>();

export function toPostgresPlaceholders(text: string): string {
  const cached = translated.get(text);
  if (cached !== undefined) return cached;
  let out = "";
  let next = 1;
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote !== null) {
      out += c;
      if (c === quote) quote = null;
    } else if (c === "'" || c === '"') {
      quote = c;
      out += c;
    } else if (c === "?") {
      const digits = /^\d+/.exec(text.slice(i + 1))?.[0];
      if (digits !== undefined) {
        out += `$${digits}`;
        i += digits.length;
      } else out += `$${next++}`;
    } else out += c;
  }
  if (translated.size < 10_000) translated.set(text, out);
  return out;
}

/** int8 columns arrive as BigInt (`bigint: true`); every integer latchkey stores fits a double. */
function plainRow<T>(row: Record<string, unknown>): T {
  for (const key in row) if (typeof row[key] === "bigint") row[key] = Number(row[key]);
  return row as T;
}

type PgTarget = Pick<Bun.SQL, "unsafe">;

/** Connection failures (as opposed to a statement the database refused). */
function unreachable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string") return false;
  return (
    code.startsWith("ERR_POSTGRES_CONNECTION") ||
    code === "ERR_POSTGRES_CONNECTION_CLOSED" ||
    code === "ERR_POSTGRES_CONNECTION_TIMEOUT" ||
    code === "ECONNREFUSED" ||
    code === "ECONNRESET" ||
    code === "57P01" || // admin_shutdown
    code === "57P02" || // crash_shutdown
    code === "57P03" // cannot_connect_now
  );
}

/**
 * A statement that writes one WAL record in a transaction of its own, committed durably: its
 * flush covers every commit before it (logical decoding, were it used, ignores the prefix).
 */
const FLUSH = "SELECT pg_logical_emit_message(true, 'latchkey', 'flush')";

/** PostgreSQL through `Bun.SQL`: a pool of connections; a transaction holds one of them. */
export class PostgresSql implements Sql {
  readonly dialect = "postgres";
  private readonly context = new AsyncLocalStorage<{ tx: PgTarget; open: boolean }>();
  private readonly shared = new SharedFlush(() => this.outside(() => this.query(FLUSH, [])).then(() => undefined));

  constructor(readonly sql: Bun.SQL) {}

  /** Runs `fn` (and what it starts) outside any transaction of this async context. */
  outside<T>(fn: () => T): T {
    return this.context.exit(fn);
  }

  /** The open transaction of this async context; work it started that outlives it uses the pool. */
  private current(): PgTarget | null {
    const store = this.context.getStore();
    return store !== undefined && store.open ? store.tx : null;
  }

  private async query(text: string, params: readonly Param[]): Promise<Record<string, unknown>[] & { count: number }> {
    const target = this.current() ?? this.sql;
    try {
      return (await target.unsafe(toPostgresPlaceholders(text), params as Param[])) as Record<string, unknown>[] & { count: number };
    } catch (error) {
      throw unreachable(error) ? new DatabaseUnavailable(error) : error;
    }
  }

  async get<T>(text: string, params: readonly Param[] = []): Promise<T | null> {
    const rows = await this.query(text, params);
    return rows.length === 0 ? null : plainRow<T>(rows[0]!);
  }

  async all<T>(text: string, params: readonly Param[] = []): Promise<T[]> {
    return (await this.query(text, params)).map((row) => plainRow<T>(row));
  }

  async run(text: string, params: readonly Param[] = []): Promise<number> {
    return (await this.query(text, params)).count;
  }

  /** A durable one-record transaction, whose disk write covers every commit before it; shared (SharedFlush). */
  flush(): Promise<void> {
    return this.shared.request();
  }

  async transaction<T>(fn: () => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    if (this.current() !== null) return fn();
    try {
      const result = await this.sql.begin(async (tx) => {
        if (options.durable === false || options.releaseBeforeFlush) await tx.unsafe("SET LOCAL synchronous_commit = off");
        const store = { tx, open: true };
        try {
          return await this.context.run(store, fn);
        } finally {
          store.open = false;
        }
      });
      if (options.releaseBeforeFlush && options.durable !== false) await this.flush();
      return result;
    } catch (error) {
      throw unreachable(error) ? new DatabaseUnavailable(error) : error;
    }
  }
}
