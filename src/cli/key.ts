/** `latchkey key ...`: pre-shared enrollment keys, worked on the data directory directly. */
import * as v from "valibot";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { expiry, group, idParam, keyLabel } from "../core/fields.ts";
import { maskSecret } from "../core/secrets.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { openLocal, printTable } from "./local.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "count", value: "1..100", help: "generate: how many keys (default 1)" },
  { name: "label", value: "TEXT", help: 'generate: a label, e.g. "Customer ABC - batch 1"' },
  { name: "group", value: "NAME", help: "generate: the client group given to machines that enroll with these keys" },
  { name: "expires", value: "DATE", help: "generate: keys unused by then stop working (YYYY-MM-DD or ISO 8601)" },
  { name: "status", value: "pending|active|revoked", help: "list: only keys in this state" },
  { name: "json", boolean: true, help: "list/generate: print JSON" },
];

const usage = `latchkey key generate [--count 1..100] [--label TEXT] [--group NAME] [--expires DATE]
       latchkey key list [--status pending|active|revoked] [--json]
       latchkey key revoke ID | reset ID | delete ID`;

const description = `Pre-shared enrollment keys (XXXX-XXXX-XXXX). A pending key admits the first client that
registers with it and becomes bound to that client's UUID; revoke disconnects the client at once;
reset returns a key to pending (e.g. for a reinstalled machine); delete removes it. generate prints
the new keys alone on standard output (KEY=$(latchkey key generate) works) and each one's ID on
standard error. Works on the data directory directly; a running server sees the change at once.`;

const count = v.pipe(
  v.string(),
  v.regex(/^\d{1,3}$/, "must be a whole number from 1 to 100"),
  v.transform(Number),
  v.minValue(1, "must be 1 to 100"),
  v.maxValue(100, "must be 1 to 100"),
);

export async function keyCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!["generate", "list", "revoke", "reset", "delete"].includes(sub))
    throw new UsageError(`unknown key command ${JSON.stringify(sub)}; see latchkey key --help`);
  let id = 0;
  if (["revoke", "reset", "delete"].includes(sub)) {
    if (rest.length !== 1) throw new UsageError(`key ${sub} takes one ID; see latchkey key list`);
    id = check(idParam, rest[0], "ID");
  }
  const quantity = check(count, flagValue(args, "count") ?? "1", spelledFlag(args, "count"));
  const label = check(keyLabel, flagValue(args, "label") ?? "", spelledFlag(args, "label"));
  const groupFlag = flagValue(args, "group");
  const clientGroup = groupFlag === undefined ? null : check(group, groupFlag, spelledFlag(args, "group"));
  const expiresFlag = flagValue(args, "expires");
  const expiresAt = expiresFlag === undefined ? null : check(expiry, expiresFlag, spelledFlag(args, "expires"));
  const statusFlag = flagValue(args, "status");
  const status =
    statusFlag === undefined
      ? undefined
      : check(v.picklist(["pending", "active", "revoked"], "must be pending, active or revoked"), statusFlag, spelledFlag(args, "status"));
  const json = flagBool(args, "json") ?? false;
  const { services, actor, close } = await openLocal(args, env);
  try {
    const enrollment = services.enrollment;
    switch (sub) {
      case "generate": {
        const keys = await enrollment.generate(actor, { quantity, label, expiresAt, group: clientGroup });
        if (json) {
          process.stdout.write(JSON.stringify(keys, null, 2) + "\n");
          return 0;
        }
        // Standard output carries the keys alone, so that KEY=$(latchkey key generate) works; the ids
        // that revoke, reset and delete take go to standard error, next to a masked key.
        for (const k of keys) {
          process.stdout.write(`${k.key}\n`);
          process.stderr.write(`created key ${k.id} (${maskSecret(k.key)})\n`);
        }
        return 0;
      }
      case "list": {
        const { items } = await enrollment.listKeys(null, { status }, 1000, 0);
        if (json) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
        else
          printTable([
            ["ID", "KEY", "STATUS", "LABEL", "CLIENT", "USES", "CREATED", "LAST USED"],
            ...items.map((k) => [
              String(k.id),
              k.key,
              k.status,
              k.label || "-",
              k.client_name ?? k.client_uuid ?? "-",
              String(k.usage_count),
              k.created_at,
              k.last_used_at ?? "never",
            ]),
          ]);
        return 0;
      }
      case "revoke":
        await enrollment.revokeKey(actor, id);
        process.stdout.write(`key ${id} revoked\n`);
        return 0;
      case "reset":
        await enrollment.resetKey(actor, id);
        process.stdout.write(`key ${id} reset to pending\n`);
        return 0;
      default:
        await enrollment.deleteKey(actor, id);
        process.stdout.write(`key ${id} deleted\n`);
        return 0;
    }
  } finally {
    // The certificates of a client whose key was revoked, reset or deleted are revoked after the
    // key itself (clients.kick): written before the database is closed.
    await services.clientCertificates.settled();
    await close();
  }
}
