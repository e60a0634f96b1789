#!/usr/bin/env bun
/** argv → server | user | key | app | license | ca | host | cert | backup | health | client | version: the binary's entry point. */
import { existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { databaseFlag, dataDirFlag, loadConfig, resolveDataDir, serverFlags } from "./config.ts";
import { AppError } from "./core/errors.ts";
import { BackupTargetExists, writeBackup } from "./db/backup.ts";
import { DATABASE_FILE } from "./db/open.ts";
import { flagValue, parseArgs, renderHelp, UsageError } from "./cli/args.ts";
import { userCommand } from "./cli/user.ts";
import { appCommand, licenseCommand } from "./cli/licensing.ts";
import { keyCommand } from "./cli/key.ts";
import { caCommand } from "./cli/ca.ts";
import { hostCommand } from "./cli/host.ts";
import { certCommand } from "./cli/cert.ts";
import { clientCommand } from "./cli/client.ts";
import { healthCommand } from "./cli/health.ts";
import { dbCommand } from "./cli/db.ts";
import { VERSION } from "./version.ts";

const HELP = `latchkey ${VERSION}: client enrollment, authentication and licensing server

Usage: latchkey <command> [flags]

Commands:
  server    run the server (HTTP, WebSocket, admin panel, API docs)
  user      manage accounts: create, list, delete, passwd, import, export; cert (certificates they sign in with)
  key       pre-shared enrollment keys: generate, list, revoke, reset, delete
  app       manage licensed applications: create, list
  license   cut and manage license keys; verify a signed receipt offline
  ca        the built-in certificate authority: show its root, or import your own
  host      hosts that report over mutual TLS: add, list, remove, bundle (their key and certificates)
  cert      certificates the CA issued: list, revoke
  backup    write a consistent copy of the database while the server runs
  db        copy a SQLite deployment into PostgreSQL, to run several nodes
  health    ask the running server whether it is healthy (exit 0 if so; for container health checks)
  client    the client agent: install, run, status, uninstall
  version   print the version

Run 'latchkey <command> --help' for a command's flags.
`;

async function serverCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, serverFlags);
  if (args.help) {
    process.stdout.write(
      renderHelp(
        "latchkey server [flags]",
        "Runs the server. Settings come from flags, then LATCHKEY_* variables (e.g. LATCHKEY_LISTEN),\n" +
          "then latchkey.json in the data directory, then defaults. On first start it creates the database\n" +
          "and the bootstrap account admin (password from LATCHKEY_ADMIN_PASSWORD, or printed once).",
        serverFlags,
      ),
    );
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`server takes no arguments (got ${JSON.stringify(args.positionals[0])})`);
  const config = loadConfig(args);
  // Signals are heard from the start: one that arrives while the server starts stops it once started.
  let signalled: string | undefined;
  let onSignal: (signal: string) => void = (signal) => void (signalled ??= signal);
  const onTerm = () => onSignal("SIGTERM");
  const onInt = () => onSignal("SIGINT");
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  // Loaded here so that admin commands do not pay for the HTTP stack at start-up.
  const { startServer } = await import("./server.ts");
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config, { adminPassword: process.env.LATCHKEY_ADMIN_PASSWORD || undefined });
  } catch (error) {
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    // A log collector reading JSON lines gets the reason as one of them.
    if (config.logFormat !== "json") throw error;
    const { createLogger } = await import("./log.ts");
    createLogger("json").error("cannot start", { error: error instanceof Error ? error.message : String(error) });
    return 1;
  }
  await new Promise<void>((resolve) => {
    onSignal = (signal) => {
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      server.stop(`received ${signal}`).then(resolve);
    };
    if (signalled !== undefined) onSignal(signalled);
  });
  return 0;
}

async function backupCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, [dataDirFlag, databaseFlag]);
  if (args.help) {
    process.stdout.write(
      renderHelp(
        "latchkey backup FILE [--data-dir DIR]",
        "Writes a consistent copy of the SQLite database to FILE (which must not exist), safe while the server runs.\n" +
          "The copy holds every secret the server keeps, so FILE is created with mode 0600.\n" +
          "With PostgreSQL (--database), back up with pg_dump instead (docs/scale-out.md).",
        [dataDirFlag],
      ),
    );
    return 0;
  }
  if ((flagValue(args, "database") ?? process.env.LATCHKEY_DATABASE_URL) !== undefined) {
    throw new UsageError("backup copies the SQLite database of a data directory; with PostgreSQL use pg_dump (docs/scale-out.md)");
  }
  if (args.positionals.length !== 1) throw new UsageError("backup takes one FILE to write; see latchkey backup --help");
  const target = args.positionals[0]!;
  if (existsSync(target)) throw new UsageError(`${target} already exists; choose a new file name`);
  if (!existsSync(dirname(target)))
    throw new UsageError(`no directory ${dirname(target)} to write ${basename(target)} in; create it first`);
  const source = join(resolveDataDir(args, process.env), DATABASE_FILE);
  if (!existsSync(source)) throw new UsageError(`no database at ${source}; pass the server's --data-dir`);
  try {
    writeBackup(source, target);
  } catch (error) {
    throw error instanceof BackupTargetExists ? new UsageError(error.message) : error;
  }
  process.stdout.write(`wrote ${target}\n`);
  return 0;
}

function versionCommand(argv: string[]): number {
  const args = parseArgs(argv, []);
  if (args.help) {
    process.stdout.write(
      renderHelp("latchkey version", "Prints the version of this binary (stamped in at build time; dev when run from source).", []),
    );
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`version takes no arguments (got ${JSON.stringify(args.positionals[0])})`);
  process.stdout.write(`latchkey ${VERSION}\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "server":
      return serverCommand(rest);
    case "user":
      return userCommand(rest, process.env);
    case "key":
      return keyCommand(rest, process.env);
    case "app":
      return appCommand(rest, process.env);
    case "license":
      return licenseCommand(rest, process.env);
    case "ca":
      return caCommand(rest, process.env);
    case "host":
      return hostCommand(rest, process.env);
    case "cert":
      return certCommand(rest, process.env);
    case "backup":
      return backupCommand(rest);
    case "db":
      return dbCommand(rest, process.env);
    case "health":
      return healthCommand(rest, process.env);
    case "client":
      return clientCommand(rest, process.env);
    case "version":
    case "--version":
    case "-version":
      return versionCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-help":
    case "-h":
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}; run 'latchkey --help' for the list`);
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      const usage = error instanceof UsageError;
      const message = error instanceof AppError || error instanceof Error ? error.message : String(error);
      process.stderr.write(`latchkey: ${message}\n`);
      if (!(error instanceof AppError) && error instanceof Error && process.env.LATCHKEY_DEBUG) process.stderr.write(`${error.stack}\n`);
      process.exit(usage ? 2 : 1);
    },
  );
}
