/** `latchkey app ...` and `latchkey license ...`: licensing administration, and offline receipt verification. */
import * as v from "valibot";
import { existsSync, readFileSync } from "node:fs";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { activationsAllowed, appName, expiry, idParam, memo, supportMessage } from "../core/fields.ts";
import { verifyReceipt } from "../core/receipts.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { openLocal, printTable } from "./local.ts";
import { readStdin } from "./prompt.ts";

const integerText = v.pipe(v.string(), v.regex(/^-?\d{1,7}$/, "must be a whole number, or -1 for unlimited"), v.transform(Number));

const appFlags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "support-message", value: "TEXT", help: "shown to users when an activation fails (create)" },
  { name: "json", boolean: true, help: "list: print JSON" },
];

const appUsage = `latchkey app create NAME [--support-message TEXT]
       latchkey app list [--json]`;

export async function appCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, appFlags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(
      renderHelp(appUsage, "Manage the applications that license keys belong to. Works on the data directory directly.", appFlags),
    );
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (sub !== "create" && sub !== "list") throw new UsageError(`unknown app command ${JSON.stringify(sub)}; see latchkey app --help`);
  if (sub === "create" && rest.length !== 1)
    throw new UsageError('app create takes one NAME (quote it if it has spaces: latchkey app create "My App")');
  const name = sub === "create" ? check(appName, rest[0], "NAME") : "";
  const message = check(supportMessage, flagValue(args, "support-message") ?? "", spelledFlag(args, "support-message"));
  const { services, actor, close } = await openLocal(args, env);
  try {
    if (sub === "create") {
      const app = await services.licensing.createApp(actor, { name, supportMessage: message });
      process.stdout.write(`created application ${app.id} ${JSON.stringify(app.name)}\n`);
      return 0;
    }
    const { items } = await services.licensing.listApps(1000, 0);
    if (flagBool(args, "json")) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
    else
      printTable([
        ["ID", "NAME", "KEYS", "SUPPORT MESSAGE"],
        ...items.map((a) => [String(a.id), a.name, String(a.licenses ?? 0), a.support_message]),
      ]);
    return 0;
  } finally {
    await close();
  }
}

const licenseFlags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "app", value: "ID", help: "application id (create; filter for list)" },
  { name: "activations", value: "N", help: "machines the key may be activated on, -1 = unlimited (default 1)" },
  { name: "memo", value: "TEXT", help: "a note kept with the key" },
  { name: "expires", value: "DATE", help: "expiry, YYYY-MM-DD or an ISO 8601 timestamp" },
  { name: "public-key", value: "FILE", help: "verify: the server's public key (GET /api/license/public-key?format=pem)" },
  { name: "hwid", value: "H", help: "verify: the receipt must be for this machine" },
  { name: "nonce", value: "N", help: "verify: the receipt must echo this nonce (the one sent with the activate or check)" },
  { name: "allow-grace", boolean: true, help: "verify: accept an expired receipt within its grace period" },
  { name: "json", boolean: true, help: "list/verify: print JSON" },
];

const licenseUsage = `latchkey license create --app ID [--activations N|-1] [--memo TEXT] [--expires DATE]
       latchkey license list [--app ID] [--json]
       latchkey license enable|disable|delete ID
       latchkey license verify RECEIPT|- --public-key FILE [--hwid H] [--nonce N] [--allow-grace]`;

const licenseDescription = `Cut and manage license keys (on the data directory directly), or verify a signed receipt
offline: verify needs no server and no data directory, only the server's public key. It exits 0
when the receipt is valid and 1 otherwise (tampered, another machine, expired, or a clock set
back behind its issue time).`;

export async function licenseCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, licenseFlags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(licenseUsage, licenseDescription, licenseFlags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (sub === "verify") return verifyCommand(args, rest);
  if (!["create", "list", "enable", "disable", "delete"].includes(sub)) {
    throw new UsageError(`unknown license command ${JSON.stringify(sub)}; see latchkey license --help`);
  }
  let id = 0;
  if (["enable", "disable", "delete"].includes(sub)) {
    if (rest.length !== 1) throw new UsageError(`license ${sub} takes one ID; see latchkey license list`);
    id = check(idParam, rest[0], "ID");
  }
  const appFlag = flagValue(args, "app");
  const appId = appFlag === undefined ? undefined : check(idParam, appFlag, spelledFlag(args, "app"));
  if (sub === "create" && appId === undefined) throw new UsageError("license create needs --app ID; see latchkey app list");
  const activations = check(
    activationsAllowed,
    check(integerText, flagValue(args, "activations") ?? "1", spelledFlag(args, "activations")),
    spelledFlag(args, "activations"),
  );
  const note = check(memo, flagValue(args, "memo") ?? "", spelledFlag(args, "memo"));
  const expiresFlag = flagValue(args, "expires");
  const expiresAt = expiresFlag === undefined ? null : check(expiry, expiresFlag, spelledFlag(args, "expires"));
  const { services, actor, close } = await openLocal(args, env);
  try {
    const licensing = services.licensing;
    switch (sub) {
      case "create": {
        const license = await licensing.createLicense(actor, { appId: appId!, activations, memo: note, expiresAt });
        process.stdout.write(`${license.token}\n`);
        process.stderr.write(
          `created license ${license.id} for ${JSON.stringify(license.app_name)}: ` +
            `${activations === -1 ? "unlimited" : activations} activation${activations === 1 ? "" : "s"}` +
            `${license.expires_at ? `, expires ${license.expires_at}` : ""}\n`,
        );
        return 0;
      }
      case "list": {
        const { items } = await licensing.listLicenses({ appId }, 1000, 0, true);
        if (flagBool(args, "json")) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
        else
          printTable([
            ["ID", "APP", "TOKEN", "USED", "STATE", "EXPIRES", "MEMO"],
            ...items.map((l) => [
              String(l.id),
              l.app_name,
              l.token,
              `${l.activations_used}/${l.activations === -1 ? "∞" : l.activations}`,
              l.enabled ? "enabled" : "disabled",
              l.expires_at ?? "-",
              l.memo,
            ]),
          ]);
        return 0;
      }
      case "enable":
      case "disable":
        await licensing.updateLicense(actor, id, { enabled: sub === "enable" });
        process.stdout.write(`license ${id} ${sub}d\n`);
        return 0;
      default:
        await licensing.deleteLicense(actor, id);
        process.stdout.write(`license ${id} deleted\n`);
        return 0;
    }
  } finally {
    await close();
  }
}

async function verifyCommand(args: ReturnType<typeof parseArgs>, rest: string[]): Promise<number> {
  if (rest.length !== 1) throw new UsageError("license verify takes one RECEIPT (or - to read it from standard input)");
  const keyFile = flagValue(args, "public-key");
  if (keyFile === undefined)
    throw new UsageError("license verify needs --public-key FILE (save it from GET /api/license/public-key?format=pem)");
  if (!existsSync(keyFile)) throw new UsageError(`no such file: ${keyFile}`);
  const receipt = rest[0] === "-" ? (await readStdin()).trim() : rest[0]!;
  const result = verifyReceipt(receipt, readFileSync(keyFile, "utf8"), {
    hwid: flagValue(args, "hwid"),
    nonce: flagValue(args, "nonce"),
    allowGrace: flagBool(args, "allow-grace") ?? false,
  });
  if (flagBool(args, "json")) {
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  } else if (result.ok) {
    const c = result.claims;
    process.stdout.write(
      `valid: application ${c.app}, license ${c.key}, hwid ${JSON.stringify(c.hwid)}, ` +
        `issued ${new Date(c.iat * 1000).toISOString()}, expires ${new Date(c.exp * 1000).toISOString()}` +
        `${c.nonce === undefined ? "" : `, nonce ${JSON.stringify(c.nonce)}`}\n`,
    );
    if (result.warning) process.stderr.write(`warning: ${result.warning}\n`);
  } else {
    process.stderr.write(`latchkey: receipt rejected: ${result.reason}\n`);
  }
  return result.ok ? 0 : 1;
}
