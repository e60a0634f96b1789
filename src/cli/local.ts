/** Admin commands work on the data directory directly: open it and build the services over it. */
import { userInfo } from "node:os";
import { dataDirFlag, loadConfig, resolveDataDir, serviceOptions, type Config } from "../config.ts";
import type { Actor } from "../core/accounts.ts";
import { createServices, type Services } from "../core/services.ts";
import { openDatabase } from "../db/open.ts";
import { parseArgs, type ParsedArgs } from "./args.ts";

export function openLocal(
  args: ParsedArgs,
  env: Record<string, string | undefined>,
): { services: Services; actor: Actor; config: Config; close(): void } {
  const dataDir = resolveDataDir(args, env);
  const config = loadConfig(parseArgs(["--data-dir", dataDir], [dataDirFlag]), env);
  const db = openDatabase(dataDir, { create: false });
  const services = createServices(db, serviceOptions(config));
  return { services, actor: { name: `cli:${userInfo().username}`, address: "local" }, config, close: () => db.close() };
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
