/** `latchkey db copy`: moves a SQLite deployment into an empty PostgreSQL database. */
import { dataDirFlag, resolveDataDir } from "../config.ts";
import { copySqliteToPostgres } from "../db/copy.ts";
import { openDatabase } from "../db/open.ts";
import { openPostgresStorage, postgresClient, redactedUrl } from "../db/storage.ts";
import { flagValue, parseArgs, renderHelp, UsageError, type FlagSpec } from "./args.ts";
import { printTable } from "./local.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  { name: "to", value: "URL", help: "the empty PostgreSQL database to fill, postgres://USER:PASSWORD@HOST:PORT/DB" },
];

const usage = "latchkey db copy --data-dir DIR --to postgres://USER:PASSWORD@HOST:PORT/DB";

const description = `Copies everything in the SQLite database of DIR (accounts, keys, clients, licenses, activations,
certificates, the CA and signing keys, settings, audit) into an empty PostgreSQL database, in one
transaction, and checks that every table arrived whole. Stop the server first: writes made during
the copy would be left behind. Then start every node with --database URL.`;

export async function dbCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (sub !== "copy") throw new UsageError(`unknown db command ${JSON.stringify(sub)}; see latchkey db --help`);
  if (rest.length > 0) throw new UsageError(`db copy takes no arguments (got ${JSON.stringify(rest[0])}); see latchkey db --help`);
  const to = flagValue(args, "to");
  if (to === undefined) throw new UsageError("db copy needs --to postgres://USER:PASSWORD@HOST:PORT/DB");
  if (!/^postgres(ql)?:\/\/\S+$/.test(to) || !URL.canParse(to)) {
    throw new UsageError("--to must be a PostgreSQL URL, e.g. postgres://latchkey:secret@db.example:5432/latchkey");
  }
  const dataDir = resolveDataDir(args, env);
  const source = openDatabase(dataDir, { create: false });
  try {
    const storage = await openPostgresStorage(to);
    try {
      const copied = await copySqliteToPostgres(source, postgresClient(storage)!);
      printTable([["TABLE", "ROWS"], ...copied.map((c) => [c.table, String(c.rows)])]);
      process.stdout.write(`copied ${dataDir} into ${redactedUrl(to)}; start the nodes with --database and that URL\n`);
    } finally {
      await storage.close();
    }
  } finally {
    source.close();
  }
  return 0;
}
