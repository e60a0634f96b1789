/** `latchkey user ...`: accounts, worked on the server's database directly (safe while the server runs). */
import { existsSync, readFileSync } from "node:fs";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { groups as groupsSchema, password as passwordSchema, role as roleSchema, username as usernameSchema } from "../core/fields.ts";
import { writeFileAtomic } from "../core/files.ts";
import { parseUsersFile, renderUsersFile } from "../core/users-file.ts";
import { openLocal, printTable } from "./local.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { newPassword } from "./prompt.ts";
import { userCertCommand } from "./user-cert.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "role", value: "admin|viewer", help: "role for create (default viewer)" },
  { name: "groups", value: "a,b", help: "client groups a viewer may see (create)" },
  { name: "password-stdin", boolean: true, help: "read the password from standard input instead of asking" },
  { name: "legacy-challenge-login", boolean: true, help: "import: keep the wsauth hash for the nonce challenge login" },
  { name: "replace", boolean: true, help: "import: overwrite accounts that already exist (their sessions end)" },
  { name: "json", boolean: true, help: "list: print JSON" },
];

const usage = `latchkey user create NAME [--role admin|viewer] [--groups a,b] [--password-stdin]
       latchkey user list [--json]
       latchkey user delete NAME
       latchkey user passwd NAME [--password-stdin]
       latchkey user import users.json [--legacy-challenge-login] [--replace]
       latchkey user export [FILE]
       latchkey user cert list|add|revoke ...   (certificates users sign in with; see latchkey user cert --help)`;

const description = `Manage the accounts that sign in to the panel and the API. Works on the data directory
directly and is safe while the server runs: deleting a user or changing a password ends their
sessions at once. import reads a wsauth users.json (all or nothing); export writes the accounts
that still hold a wsauth hash back to that format (to FILE atomically, or to standard output).`;

export async function userCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  // `user cert` has flags of its own: it parses its arguments itself.
  if (argv[0] === "cert") return userCertCommand(argv.slice(1), env);
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined || sub === "help") {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (sub === "cert")
    return userCertCommand(
      argv.filter((_, i) => i !== argv.indexOf("cert")),
      env,
    );
  const known = ["create", "list", "delete", "passwd", "import", "export"];
  if (!known.includes(sub)) throw new UsageError(`unknown user command ${JSON.stringify(sub)}; see latchkey user --help`);
  const needName = () => {
    if (rest.length !== 1) throw new UsageError(`user ${sub} takes exactly one NAME; see latchkey user --help`);
    return check(usernameSchema, rest[0], "NAME");
  };
  // Usage is checked before the database is touched.
  const name = ["create", "delete", "passwd"].includes(sub) ? needName() : "";
  const { services, actor, close } = await openLocal(args, env);
  try {
    switch (sub) {
      case "create": {
        const role = check(roleSchema, flagValue(args, "role") ?? "viewer", spelledFlag(args, "role"));
        const groupList = (flagValue(args, "groups") ?? "")
          .split(",")
          .map((g) => g.trim())
          .filter(Boolean);
        const allowedGroups = check(groupsSchema, groupList, spelledFlag(args, "groups"));
        const password = check(passwordSchema, await newPassword(flagBool(args, "password-stdin") ?? false), "password");
        await services.accounts.create(actor, { username: name, password, role, allowedGroups });
        process.stdout.write(`created ${role} ${name}\n`);
        return 0;
      }
      case "list": {
        const { items } = await services.accounts.list(1000, 0);
        if (flagBool(args, "json")) {
          process.stdout.write(JSON.stringify(items, null, 2) + "\n");
          return 0;
        }
        const rows = [
          ["USERNAME", "ROLE", "GROUPS", "LAST LOGIN", "NOTE"],
          ...items.map((u) => [
            u.username,
            u.role,
            u.allowed_groups.join(",") || "-",
            u.last_login_at ?? "never",
            u.legacy_challenge ? "wsauth (challenge login)" : u.legacy ? "wsauth import" : "",
          ]),
        ];
        printTable(rows);
        return 0;
      }
      case "delete": {
        await services.accounts.delete(actor, name);
        process.stdout.write(`deleted ${name}; their sessions have ended\n`);
        return 0;
      }
      case "passwd": {
        await services.accounts.require(name);
        const password = check(passwordSchema, await newPassword(flagBool(args, "password-stdin") ?? false), "password");
        await services.accounts.changePassword(actor, name, password);
        process.stdout.write(`changed the password of ${name}; their sessions have ended\n`);
        return 0;
      }
      case "import": {
        if (rest.length !== 1) throw new UsageError("user import takes one FILE (a wsauth users.json)");
        const file = rest[0]!;
        if (!existsSync(file)) throw new UsageError(`no such file: ${file}`);
        const { users, skipped } = parseUsersFile(readFileSync(file, "utf8"));
        const keep = flagBool(args, "legacy-challenge-login") ?? false;
        const { created, replaced } = await services.accounts.importLegacy(actor, users, keep, flagBool(args, "replace") ?? false);
        for (const { name, reason } of skipped) process.stderr.write(`skipped ${name}: ${reason}\n`);
        const count = created + replaced;
        process.stdout.write(
          `imported ${count} user${count === 1 ? "" : "s"}` +
            `${replaced > 0 ? ` (${replaced} replaced, their sessions ended)` : ""}${keep ? " (wsauth challenge login kept)" : ""}\n`,
        );
        return 0;
      }
      case "export": {
        if (rest.length > 1) throw new UsageError("user export takes at most one FILE");
        const text = renderUsersFile(await services.accounts.exportLegacy());
        if (rest[0] === undefined || rest[0] === "-") process.stdout.write(text);
        else {
          writeFileAtomic(rest[0], text);
          process.stderr.write(`wrote ${rest[0]}\n`);
        }
        return 0;
      }
      default:
        return 2;
    }
  } finally {
    await close();
  }
}
