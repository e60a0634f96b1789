/**
 * `latchkey db copy`: moves a SQLite deployment into an empty PostgreSQL database, everything in
 * one transaction (accounts, keys, clients, licenses, activations, certificates, the CA and
 * signing keys, settings, audit), then checks that every table holds as many rows as the source.
 */
import type { Database } from "bun:sqlite";

export interface CopiedTable {
  table: string;
  rows: number;
}

/** Parameters per INSERT stay well below PostgreSQL's 65,535. */
const MAX_PARAMS = 30_000;

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`;

/** The source's tables, each after the tables its foreign keys point at. */
function tablesInOrder(source: Database): string[] {
  const tables = source
    .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all()
    .map((t) => t.name)
    .filter((t) => t !== "_migrations");
  const needs = new Map(
    tables.map((t) => [
      t,
      source
        .query<{ table: string }, []>(`SELECT "table" FROM pragma_foreign_key_list(${quoteLiteral(t)})`)
        .all()
        .map((f) => f.table)
        .filter((p) => p !== t),
    ]),
  );
  const ordered: string[] = [];
  const visit = (t: string, path: Set<string>) => {
    if (ordered.includes(t)) return;
    if (path.has(t)) throw new Error(`foreign keys form a cycle through ${t}`);
    path.add(t);
    for (const parent of needs.get(t) ?? []) visit(parent, path);
    path.delete(t);
    ordered.push(t);
  };
  for (const t of tables) visit(t, new Set());
  return ordered;
}

function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function migrationNames(rows: { name: string }[]): string {
  return rows
    .map((r) => r.name)
    .sort()
    .join(", ");
}

/**
 * Copies every row of `source` (a migrated SQLite database) into `target` (a migrated, empty
 * PostgreSQL database). Refuses a target that holds any row, or whose migrations differ.
 */
export async function copySqliteToPostgres(
  source: Database,
  target: Bun.SQL,
  progress: (copied: CopiedTable) => void = () => undefined,
): Promise<CopiedTable[]> {
  const from = migrationNames(source.query<{ name: string }, []>("SELECT name FROM _migrations").all());
  const to = migrationNames(await target.unsafe("SELECT name FROM _migrations"));
  if (from !== to)
    throw new Error(`the two databases are at different migrations (SQLite: ${from}; PostgreSQL: ${to}); use the same latchkey`);
  const tables = tablesInOrder(source);
  for (const table of tables) {
    const [row] = await target.unsafe(`SELECT EXISTS (SELECT 1 FROM ${quote(table)}) AS taken`);
    if (row.taken) throw new Error(`the PostgreSQL database is not empty (table ${table} has rows); copy into an empty database`);
  }
  const identities: { table_name: string; column_name: string }[] = await target.unsafe(
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'",
  );
  const copied: CopiedTable[] = [];
  await target.begin(async (tx) => {
    for (const table of tables) {
      const columns = source
        .query<{ name: string }, []>(`SELECT name FROM pragma_table_info(${quoteLiteral(table)}) ORDER BY cid`)
        .all()
        .map((c) => c.name);
      const perRow = columns.length;
      const batch = Math.max(1, Math.floor(MAX_PARAMS / perRow));
      const head = `INSERT INTO ${quote(table)} (${columns.map(quote).join(", ")}) VALUES `;
      let rows: unknown[][] = [];
      let count = 0;
      const flush = async () => {
        if (rows.length === 0) return;
        const values = rows.map((_, r) => `(${columns.map((_, c) => `$${r * perRow + c + 1}`).join(", ")})`).join(", ");
        await tx.unsafe(head + values, rows.flat());
        count += rows.length;
        rows = [];
      };
      // Streamed: an audit log of millions of rows never sits in memory at once.
      for (const row of source
        .query<Record<string, unknown>, []>(`SELECT ${columns.map(quote).join(", ")} FROM ${quote(table)}`)
        .iterate()) {
        rows.push(columns.map((c) => row[c]));
        if (rows.length >= batch) await flush();
      }
      await flush();
      const [counted] = await tx.unsafe(`SELECT count(*) AS n FROM ${quote(table)}`);
      const expected = (source.query(`SELECT count(*) AS n FROM ${quote(table)}`).get() as { n: number }).n;
      if (Number(counted.n) !== expected || count !== expected) {
        throw new Error(`table ${table}: ${Number(counted.n)} rows arrived of ${expected}; nothing was copied`);
      }
      copied.push({ table, rows: expected });
      progress({ table, rows: expected });
    }
    // Identity columns continue after the copied ids.
    for (const { table_name, column_name } of identities) {
      await tx.unsafe(
        `SELECT setval(pg_get_serial_sequence(${quoteLiteral(quote(table_name))}, ${quoteLiteral(column_name)}),
                (SELECT coalesce(max(${quote(column_name)}), 0) + 1 FROM ${quote(table_name)}), false)`,
      );
    }
  });
  return copied;
}
