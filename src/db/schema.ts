/**
 * Text descriptions of a live schema, one per backend, so that a migration's effect can be
 * reviewed and committed (src/db/schema/*.txt, written by scripts/schema.ts) and a schema that
 * drifts from them fails test/db-schema.test.ts.
 *
 * Both describe, per table sorted by name: its columns in order (type, nullability, default,
 * primary key), then its primary key, unique constraints, indexes (keys or expressions, partial
 * WHERE), foreign keys (target, ON UPDATE and ON DELETE), checks and triggers, each group sorted;
 * PostgreSQL's description ends with the functions no trigger calls (their arguments, result and
 * body). Whitespace and SQLite's comments are normalised away.
 */
import type { Database } from "bun:sqlite";

interface Table {
  name: string;
  header: string;
  columns: string[];
  /** The primary key, unique constraints, indexes, foreign keys, checks, triggers: in this order. */
  sections: string[][];
}

function render(tables: Table[]): string {
  const out: string[] = [];
  for (const table of [...tables].sort((a, b) => compare(a.name, b.name))) {
    out.push(table.header, ...table.columns);
    for (const section of table.sections) out.push(...[...section].sort(compare));
    out.push("");
  }
  return out.join("\n");
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const squash = (text: string) => text.replace(/\s+/g, " ").trim();

// ---------------------------------------------------------------------------------------------
// SQLite: PRAGMAs for columns, keys and indexes; the stored CREATE text for what they do not say
// (index expressions, partial WHERE, checks, triggers).

interface Token {
  kind: "word" | "string" | "ident" | "punct" | "space";
  text: string;
}

const TOKEN = /(\s+|--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*')|("(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])|([\w$.]+)|([\s\S])/gy;

/** Splits SQLite SQL into tokens; a run of whitespace and comments is one space. */
function tokenize(sql: string): Token[] {
  const kinds = ["space", "string", "ident", "word", "punct"] as const;
  const tokens: Token[] = [];
  for (const m of sql.matchAll(TOKEN)) {
    const kind = kinds[m.slice(1).findIndex((g) => g !== undefined)]!;
    if (kind === "space" && tokens.at(-1)?.kind === "space") continue;
    tokens.push({ kind, text: kind === "space" ? " " : m[0] });
  }
  return tokens;
}

const isWord = (t: Token | undefined, word: string) => t?.kind === "word" && t.text.toUpperCase() === word;

/** The tokens as text: single spaces, none at the ends, just inside parentheses or before commas. */
function join(tokens: Token[]): string {
  return tokens
    .filter((t, i) => {
      if (t.kind !== "space") return true;
      const before = tokens[i - 1];
      const after = tokens[i + 1];
      if (before === undefined || after === undefined) return false;
      return !(before.kind === "punct" && before.text === "(") && !(after.kind === "punct" && (after.text === ")" || after.text === ","));
    })
    .map((t) => t.text)
    .join("");
}

/** The index just past the parenthesis that closes the one at `open`. */
function closing(tokens: Token[], open: number): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (tokens[i]!.kind !== "punct") continue;
    if (tokens[i]!.text === "(") depth++;
    else if (tokens[i]!.text === ")" && --depth === 0) return i + 1;
  }
  return tokens.length;
}

function nextSolid(tokens: Token[], from: number): number {
  let i = from;
  while (i < tokens.length && tokens[i]!.kind === "space") i++;
  return i;
}

/** The CHECK (...) clauses of a CREATE TABLE statement. */
function sqliteChecks(createTable: string): string[] {
  const tokens = tokenize(createTable);
  const checks: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    if (!isWord(tokens[i], "CHECK")) continue;
    const open = nextSolid(tokens, i + 1);
    if (tokens[open]?.text !== "(") continue;
    const end = closing(tokens, open);
    checks.push(`check ${join(tokens.slice(open, end))}`);
    i = end - 1;
  }
  return checks;
}

/** "(keys) where predicate" of a CREATE INDEX statement. */
function sqliteIndexBody(createIndex: string): string {
  const tokens = tokenize(createIndex);
  const on = tokens.findIndex((t) => isWord(t, "ON"));
  const open = tokens.findIndex((t, i) => i > on && t.text === "(");
  const end = closing(tokens, open);
  const keys = join(tokens.slice(open, end));
  const where = tokens.findIndex((t, i) => i >= end && isWord(t, "WHERE"));
  return where < 0 ? keys : `${keys} where ${join(tokens.slice(where + 1))}`;
}

/** "timing event ... when ..." and the body of a CREATE TRIGGER statement. */
function sqliteTrigger(createTrigger: string): { head: string; body: string } {
  const tokens = tokenize(createTrigger);
  let name = nextSolid(tokens, tokens.findIndex((t) => isWord(t, "TRIGGER")) + 1);
  while (["IF", "NOT", "EXISTS"].some((w) => isWord(tokens[name], w))) name = nextSolid(tokens, name + 1);
  const begin = tokens.findIndex((t) => isWord(t, "BEGIN"));
  let end = tokens.length - 1;
  while (end > begin && !isWord(tokens[end], "END")) end--;
  return { head: join(tokens.slice(name + 1, begin)), body: join(tokens.slice(begin + 1, end)) };
}

const quoteSqlite = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** A description of an SQLite database's schema (sqlite_* internal tables left out). */
export function describeSqlite(db: Database): string {
  const master = db
    .query<{ type: string; name: string; tbl_name: string; sql: string | null }, []>(
      "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    .all();
  const tables: Table[] = [];
  for (const entry of master.filter((e) => e.type === "table")) {
    const q = quoteSqlite(entry.name);
    const info = db
      .query<{ wr: number; strict: number }, [string]>("SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?")
      .get(entry.name);
    const columns = db
      .query<{ name: string; type: string; notnull: number; dflt_value: string | null; pk: number }, []>(`PRAGMA table_info(${q})`)
      .all();
    const sql = entry.sql ?? "";
    const tokens = tokenize(sql);
    const autoincrement = tokens.some((t) => isWord(t, "AUTOINCREMENT"));
    const pk = columns.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
    const rowidAlias = !info?.wr && pk.length === 1 && pk[0]!.type.toUpperCase() === "INTEGER";
    const columnLines = columns.map((c) => {
      const parts = [c.type || "(no type)"];
      if (c.notnull) parts.push("not null");
      if (c.dflt_value !== null) parts.push(`default ${squash(c.dflt_value)}`);
      if (c.pk > 0) parts.push("primary key");
      if (c.pk > 0 && rowidAlias) parts.push(autoincrement ? "rowid, autoincrement" : "rowid");
      return `  column ${c.name}: ${parts.join(", ")}`;
    });

    const primary = pk.length > 0 ? [`  primary key (${pk.map((c) => c.name).join(", ")})`] : [];
    const uniques: string[] = [];
    const indexes: string[] = [];
    const indexList = db.query<{ name: string; unique: number; origin: string; partial: number }, []>(`PRAGMA index_list(${q})`).all();
    for (const index of indexList) {
      if (index.origin === "pk") continue;
      if (index.origin === "u") {
        const cols = db
          .query<{ seqno: number; name: string; coll: string; key: number }, []>(`PRAGMA index_xinfo(${quoteSqlite(index.name)})`)
          .all()
          .filter((c) => c.key)
          .sort((a, b) => a.seqno - b.seqno)
          .map((c) => (c.coll === "BINARY" ? c.name : `${c.name} COLLATE ${c.coll}`));
        uniques.push(`  unique (${cols.join(", ")})`);
        continue;
      }
      const create = master.find((e) => e.type === "index" && e.name === index.name)?.sql ?? "";
      indexes.push(`  index ${index.name}: ${index.unique ? "unique " : ""}${sqliteIndexBody(create)}`);
    }

    const foreign = db
      .query<{ id: number; seq: number; table: string; from: string; to: string | null; on_update: string; on_delete: string }, []>(
        `PRAGMA foreign_key_list(${q})`,
      )
      .all();
    const byId = new Map<number, typeof foreign>();
    for (const fk of foreign) byId.set(fk.id, [...(byId.get(fk.id) ?? []), fk]);
    const foreignKeys = [...byId.values()].map((parts) => {
      parts.sort((a, b) => a.seq - b.seq);
      const first = parts[0]!;
      const to = parts.every((p) => p.to !== null) ? ` (${parts.map((p) => p.to).join(", ")})` : "";
      return (
        `  foreign key (${parts.map((p) => p.from).join(", ")}) references ${first.table}${to}` +
        ` on update ${first.on_update.toLowerCase()} on delete ${first.on_delete.toLowerCase()}`
      );
    });

    const checks = sqliteChecks(sql).map((c) => `  ${c}`);
    const triggers = master
      .filter((e) => e.type === "trigger" && e.tbl_name === entry.name)
      .map((e) => {
        const { head, body } = sqliteTrigger(e.sql ?? "");
        return `  trigger ${e.name}: ${head}\n    body: ${body}`;
      });

    const flags = [info?.wr ? "without rowid" : "", info?.strict ? "strict" : ""].filter(Boolean);
    tables.push({
      name: entry.name,
      header: `table ${entry.name}${flags.length > 0 ? ` (${flags.join(", ")})` : ""}`,
      columns: columnLines,
      sections: [primary, uniques, indexes, foreignKeys, checks, triggers],
    });
  }
  return render(tables);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the catalogs of the current schema, through the server's own pg_get_* deparsers.

const ACTIONS: Record<string, string> = { a: "no action", r: "restrict", c: "cascade", n: "set null", d: "set default" };

/** A description of the current schema of a PostgreSQL database. */
export async function describePostgres(sql: Bun.SQL): Promise<string> {
  const tableRows: { name: string; kind: string }[] = await sql`
    SELECT relname AS name, relkind::text AS kind FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')`;
  const columnRows: {
    table: string;
    name: string;
    type: string;
    notnull: boolean;
    default: string | null;
    identity: string;
    generated: string;
    collation: string | null;
  }[] = await sql`
    SELECT c.relname AS table, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull,
      pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity::text AS identity, a.attgenerated::text AS generated,
      CASE WHEN a.attcollation <> t.typcollation THEN (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END AS collation
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum`;
  const constraintRows: {
    table: string;
    type: string;
    columns: string | null;
    ref_table: string | null;
    ref_columns: string | null;
    on_update: string;
    on_delete: string;
    definition: string;
  }[] = await sql`
    SELECT c.relname AS table, con.contype::text AS type,
      (SELECT string_agg(a.attname, ', ' ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS columns,
      (SELECT relname FROM pg_class WHERE oid = con.confrelid) AS ref_table,
      (SELECT string_agg(a.attname, ', ' ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n) AS ref_columns,
      con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete, pg_get_constraintdef(con.oid, true) AS definition
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    WHERE c.relnamespace = current_schema()::regnamespace`;
  const indexRows: { table: string; name: string; unique: boolean; method: string; keys: string; predicate: string | null }[] = await sql`
    SELECT c.relname AS table, i.relname AS name, x.indisunique AS unique, am.amname AS method,
      (SELECT string_agg(pg_get_indexdef(x.indexrelid, k, true), ', ' ORDER BY k) FROM generate_series(1, x.indnkeyatts::int) k) AS keys,
      pg_get_expr(x.indpred, x.indrelid, true) AS predicate
    FROM pg_index x
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_am am ON am.oid = i.relam
    WHERE c.relnamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = x.indexrelid AND con.conrelid = x.indrelid
        AND con.contype IN ('p', 'u', 'x'))`;
  const triggerRows: { table: string; name: string; definition: string; body: string }[] = await sql`
    SELECT c.relname AS table, t.tgname AS name, pg_get_triggerdef(t.oid, true) AS definition, p.prosrc AS body
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
    WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal`;
  // Functions of their own (latchkey_activate); those of triggers are shown with their triggers.
  const functionRows: { name: string; args: string; result: string; body: string }[] = await sql`
    SELECT p.proname AS name, pg_get_function_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result, p.prosrc AS body
    FROM pg_proc p
    WHERE p.pronamespace = current_schema()::regnamespace AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)`;

  const tables: Table[] = tableRows.map((t) => {
    const constraints = constraintRows.filter((c) => c.table === t.name);
    const keyColumns = new Set(
      constraints
        .filter((c) => c.type === "p")
        .flatMap((c) => (c.columns ?? "").split(", "))
        .filter(Boolean),
    );
    const columns = columnRows
      .filter((c) => c.table === t.name)
      .map((c) => {
        const parts = [c.type];
        if (c.collation !== null) parts.push(`collate ${c.collation}`);
        if (c.notnull) parts.push("not null");
        if (c.generated === "s") parts.push(`generated always as (${squash(c.default ?? "")}) stored`);
        else if (c.default !== null) parts.push(`default ${squash(c.default)}`);
        if (keyColumns.has(c.name)) parts.push("primary key");
        if (c.identity === "d") parts.push("generated by default as identity");
        if (c.identity === "a") parts.push("generated always as identity");
        return `  column ${c.name}: ${parts.join(", ")}`;
      });
    const of = (type: string) => constraints.filter((c) => c.type === type);
    const primary = of("p").map((c) => `  primary key (${c.columns})`);
    const uniques = of("u").map((c) => `  unique (${c.columns})`);
    const exclusions = of("x").map((c) => `  ${squash(c.definition).toLowerCase()}`);
    const indexes = indexRows
      .filter((i) => i.table === t.name)
      .map((i) => {
        const using = i.method === "btree" ? "" : ` using ${i.method}`;
        const where = i.predicate === null ? "" : ` where ${squash(i.predicate)}`;
        return `  index ${i.name}: ${i.unique ? "unique " : ""}(${squash(i.keys)})${using}${where}`;
      });
    const foreignKeys = of("f").map(
      (c) =>
        `  foreign key (${c.columns}) references ${c.ref_table} (${c.ref_columns})` +
        ` on update ${ACTIONS[c.on_update] ?? c.on_update} on delete ${ACTIONS[c.on_delete] ?? c.on_delete}`,
    );
    const checks = of("c").map((c) => `  ${squash(c.definition).replace(/^CHECK/, "check")}`);
    const triggers = triggerRows
      .filter((r) => r.table === t.name)
      .map((r) => {
        const head = squash(r.definition).replace(/^CREATE (CONSTRAINT )?TRIGGER \S+ /, "");
        return `  trigger ${r.name}: ${head}\n    body: ${squash(r.body)}`;
      });
    return {
      name: t.name,
      header: `table ${t.name}${t.kind === "p" ? " (partitioned)" : ""}`,
      columns,
      sections: [primary, [...uniques, ...exclusions], indexes, foreignKeys, checks, triggers],
    };
  });
  const functions = functionRows
    .map(
      (f) => `function ${f.name}(${squash(f.args)}) returns ${squash(f.result)}
  body: ${squash(f.body)}
`,
    )
    .sort(compare);
  return render(tables) + functions.join("\n");
}
