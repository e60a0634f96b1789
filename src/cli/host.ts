/** `latchkey host ...`: hosts that report over mutual TLS (woodstock), and their certificate bundles, on the data directory directly. */
import * as v from "valibot";
import { join } from "node:path";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { group, hostname } from "../core/fields.ts";
import { AppError } from "../core/errors.ts";
import { writeFileAtomic } from "../core/files.ts";
import type { Hosts, HostView } from "../core/hosts.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { refuseOtherFlags, requireRoot } from "./ca.ts";
import { openLocal, printTable } from "./local.ts";
import { prepareDirectory, sameContent } from "./out-dir.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "group", value: "NAME", help: "add: the host's group (viewers see the hosts of their groups); list: only this group" },
  { name: "status", value: "online|offline", help: "list: only hosts that reported within three intervals (online), or not" },
  { name: "json", boolean: true, help: "list: print JSON" },
  { name: "out", value: "DIR", help: "bundle: where to write the files (default: the current directory; created 0700 if missing)" },
  { name: "force", boolean: true, help: "bundle: replace files of the same names in DIR" },
];

const usage = `latchkey host add HOSTNAME [--group NAME]
       latchkey host list [--group NAME] [--status online|offline] [--json]
       latchkey host remove HOSTNAME
       latchkey host bundle HOSTNAME [--out DIR] [--force]`;

const description = `Hosts allowed to report to POST /api/hosts/HOSTNAME/client on the mTLS listener (port 9443 by
default) with a certificate of latchkey's CA whose CN is their name. HOSTNAME is a DNS name, kept
in lower case. remove also revokes the host's certificates.

bundle issues the host a new certificate (clientAuth, a year) with a fresh key and writes the
woodstock client's files into DIR: HOSTNAME_https.key (mode 0600; the key is kept nowhere else),
HOSTNAME_https.pem and rootCA.pem (0644), each written whole or not at all. Existing files are not
replaced without --force (a rootCA.pem identical to the root is left as it is). Earlier bundles
stay valid until revoked (latchkey cert revoke SERIAL). Works on the data directory directly; a
running server sees the change at once. The root comes from the server's first start.`;

const FLAGS_OF: Record<string, string[]> = {
  add: ["group"],
  list: ["group", "status", "json"],
  remove: [],
  bundle: ["out", "force"],
};

export async function hostCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!(sub in FLAGS_OF)) throw new UsageError(`unknown host command ${JSON.stringify(sub)}; see latchkey host --help`);
  refuseOtherFlags(args, "host", sub, FLAGS_OF[sub]!);
  let name = "";
  if (sub === "list") {
    if (rest.length > 0)
      throw new UsageError(`host list takes no arguments (got ${JSON.stringify(rest[0])}); filter with --group or --status`);
  } else {
    if (rest.length !== 1) throw new UsageError(`host ${sub} takes one HOSTNAME (e.g. latchkey host ${sub} web1.example.com)`);
    name = check(hostname, rest[0], "HOSTNAME").toLowerCase();
  }
  const groupFlag = flagValue(args, "group");
  const hostGroup = groupFlag === undefined ? undefined : check(group, groupFlag, spelledFlag(args, "group"));
  const statusFlag = flagValue(args, "status");
  const status =
    statusFlag === undefined
      ? undefined
      : check(v.picklist(["online", "offline"], "must be online or offline"), statusFlag, spelledFlag(args, "status"));
  const outFlag = flagValue(args, "out");
  if (outFlag === "") throw new UsageError(`${spelledFlag(args, "out")} needs a directory (. for the current one)`);
  const { services, actor, config, close } = await openLocal(args, env);
  try {
    const hosts = services.hosts;
    switch (sub) {
      case "add": {
        let host: HostView;
        try {
          host = await hosts.registerHost(actor, name, hostGroup ?? null);
        } catch (error) {
          if (error instanceof AppError && error.code === "conflict")
            throw new AppError("conflict", `${error.message}; see latchkey host list`);
          throw error;
        }
        process.stdout.write(
          `registered host ${host.hostname}${host.group === null ? "" : ` in group ${host.group}`}; ` +
            `give it its files with latchkey host bundle ${host.hostname}\n`,
        );
        return 0;
      }
      case "list": {
        const items = [];
        for (let offset = 0; ; offset += 1000) {
          const page = (await hosts.listHosts(null, { group: hostGroup, status }, 1000, offset)).items;
          items.push(...page);
          if (page.length < 1000) break;
        }
        if (flagBool(args, "json")) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
        else
          printTable([
            ["HOSTNAME", "GROUP", "STATUS", "LAST REPORT", "ADDRESS", "VERSION", "CERTIFICATE", "EXPIRES"],
            ...items.map((h) => [
              h.hostname,
              h.group ?? "-",
              h.online ? "online" : "offline",
              h.last_report_at ?? "never",
              h.last_address ?? "-",
              h.report?.version || "-",
              h.certificate?.serial ?? "-",
              h.certificate?.not_after ?? "-",
            ]),
          ]);
        return 0;
      }
      case "remove": {
        await requireHost(hosts, name);
        const valid = (await services.ca.list(null, { hostname: name, status: "valid" }, 1000, 0)).total;
        await hosts.removeHost(actor, name);
        process.stdout.write(`removed host ${name}; revoked its ${valid} valid certificate${valid === 1 ? "" : "s"}\n`);
        return 0;
      }
      default: {
        await requireHost(hosts, name);
        const ca = (await requireRoot(services.ca)).certificate;
        const dir = outFlag ?? ".";
        const files = { key: join(dir, `${name}_https.key`), certificate: join(dir, `${name}_https.pem`), ca: join(dir, "rootCA.pem") };
        prepareDirectory(
          dir,
          [files.key, files.certificate, ...(sameContent(files.ca, ca) ? [] : [files.ca])],
          flagBool(args, "force") ?? false,
        );
        const bundle = await hosts.hostBundle(actor, name);
        try {
          writeFileAtomic(files.ca, bundle.ca, 0o644);
          writeFileAtomic(files.certificate, bundle.certificate, 0o644);
          writeFileAtomic(files.key, bundle.key, 0o600);
        } catch (error) {
          throw new Error(
            `issued certificate ${bundle.serial} but could not write its files (${(error as Error).message}); ` +
              `revoke it (latchkey cert revoke ${bundle.serial}) and run host bundle again with another --out DIR`,
          );
        }
        const port = config.mtlsListen.port === 0 ? 9443 : config.mtlsListen.port;
        process.stdout.write(
          `issued certificate ${bundle.serial} for ${name}, valid until ${bundle.not_after}\n` +
            `wrote ${files.key} (0600: the host's private key, kept nowhere else)\n` +
            `wrote ${files.certificate}\n` +
            `wrote ${files.ca}\n` +
            "try it (SERVER: a name in the mTLS listener's certificate, see latchkey server --san):\n" +
            `  curl --cert ${shellWord(files.certificate)} --key ${shellWord(files.key)} --cacert ${shellWord(files.ca)} \\\n` +
            `    -X POST https://SERVER:${port}/api/hosts/${name}/client -H 'content-type: application/json' \\\n` +
            `    -d '{"interfaces":[],"port":0,"version":"curl"}'\n`,
        );
        return 0;
      }
    }
  } finally {
    await close();
  }
}

async function requireHost(hosts: Hosts, name: string): Promise<void> {
  try {
    await hosts.getHost(null, name);
  } catch (error) {
    if (error instanceof AppError && error.code === "not_found")
      throw new AppError("not_found", `no host ${name} is registered; see latchkey host list, or add it: latchkey host add ${name}`);
    throw error;
  }
}

/** A path as one shell word, quoted only when it needs to be. */
function shellWord(text: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}
