import { userInfo } from "node:os";
import { databaseFlag, dataDirFlag, loadConfig, resolveDataDir, serviceOptions, type Config } from "../config.ts";
import type { Actor } from "../core/accounts.ts";
import { createServices, type Services } from "../core/services.ts";
import { openPostgresStorage, openSqliteStorage } from "../db/storage.ts";
import { flagValue, parseArgs, type ParsedArgs } from "./args.ts";

/**
 * Admin commands work on the server's database directly: SQLite in the data directory, or the
 * PostgreSQL the nodes share (`--database`, LATCHKEY_DATABASE_URL or `database` in latchkey.json).
 */
export async function openLocal(
  args: ParsedArgs,
  env: Record<string, string | undefined>,
): Promise<{ services: Services; actor: Actor; config: Config; close(): Promise<void> }> {
  const dataDir = resolveDataDir(args, env);
  const database = flagValue(args, "database");
  const config = loadConfig(
    parseArgs(["--data-dir", dataDir, ...(database !== undefined ? ["--database", database] : [])], [dataDirFlag, databaseFlag]),
    env,
  );
  const storage =
    config.databaseUrl === undefined ? openSqliteStorage(dataDir, { create: false }) : await openPostgresStorage(config.databaseUrl);
  const services = await createServices(storage, serviceOptions(config));
  return { services, actor: { name: `cli:${userInfo().username}`, address: "local" }, config, close: () => storage.close() };
}

/** Prints rows as aligned columns, the first row being the header. */
export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows)
    process.stdout.write(
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd() + "\n",
    );
}
