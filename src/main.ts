#!/usr/bin/env bun
/** argv → server | user | key | app | license | backup | client | version. The one entry point of the `latchkey` binary. */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { dataDirFlag, loadConfig, resolveDataDir, serverFlags } from "./config.ts";
import { AppError } from "./core/errors.ts";
import { DATABASE_FILE } from "./db/open.ts";
import { parseArgs, renderHelp, UsageError } from "./cli/args.ts";
import { userCommand } from "./cli/user.ts";
import { appCommand, licenseCommand } from "./cli/licensing.ts";
import { keyCommand } from "./cli/key.ts";
import { clientCommand } from "./cli/client.ts";
import { VERSION } from "./version.ts";

const HELP = `latchkey ${VERSION}: client enrollment, authentication and licensing server

Usage: latchkey <command> [flags]

Commands:
  server    run the server (HTTP, WebSocket, admin panel, API docs)
  user      manage accounts: create, list, delete, passwd, import, export
  key       pre-shared enrollment keys: generate, list, revoke, reset, delete
  app       manage licensed applications: create, list
  license   cut and manage license keys; verify a signed receipt offline
  backup    write a consistent copy of the database while the server runs
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
        "Runs the server. Settings come from flags, then LATCHKEY_* variables (e.g. LATCHKEY_LISTEN),\nthen latchkey.json in the data directory, then defaults. On first start it creates the database\nand the bootstrap account admin (password from LATCHKEY_ADMIN_PASSWORD, or printed once).",
        serverFlags,
      ),
    );
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`server takes no arguments (got ${JSON.stringify(args.positionals[0])})`);
  const config = loadConfig(args);
  // Loaded here so that admin commands do not pay for the HTTP stack at start-up.
  const { startServer } = await import("./server.ts");
  const server = await startServer(config, { adminPassword: process.env.LATCHKEY_ADMIN_PASSWORD || undefined });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      server.stop(`received ${signal}`).then(resolve);
    };
    const onTerm = () => onSignal("SIGTERM");
    const onInt = () => onSignal("SIGINT");
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
  });
  return 0;
}

async function backupCommand(argv: string[]): Promise<number> {
  const args = parseArgs(argv, [dataDirFlag]);
  if (args.help) {
    process.stdout.write(renderHelp("latchkey backup FILE [--data-dir DIR]", "Writes a consistent copy of the database to FILE (which must not exist), safe while the server runs.", [dataDirFlag]));
    return 0;
  }
  if (args.positionals.length !== 1) throw new UsageError("backup takes one FILE to write; see latchkey backup --help");
  const target = args.positionals[0]!;
  if (existsSync(target)) throw new UsageError(`${target} already exists; choose a new file name`);
  const source = join(resolveDataDir(args, process.env), DATABASE_FILE);
  if (!existsSync(source)) throw new UsageError(`no database at ${source}; pass the server's --data-dir`);
  const db = new Database(source, { readonly: true });
  try {
    db.run("PRAGMA busy_timeout = 10000");
    // VACUUM INTO reads one snapshot, so the copy is consistent even while the server writes.
    db.query("VACUUM INTO ?").run(target);
  } finally {
    db.close();
  }
  process.stdout.write(`wrote ${target}\n`);
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
    case "backup":
      return backupCommand(rest);
    case "client":
      return clientCommand(rest, process.env);
    case "version":
    case "--version":
    case "-version":
      process.stdout.write(`latchkey ${VERSION}\n`);
      return 0;
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
