/** `latchkey cert ...`: the certificates latchkey's CA issued, listed and revoked on the data directory directly. */
import * as v from "valibot";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { CERTIFICATE_KINDS, REVOCATION_REASONS, type CertificateView } from "../core/ca/authority.ts";
import { normalizeSerial } from "../core/ca/x509.ts";
import { AppError } from "../core/errors.ts";
import { hostname } from "../core/fields.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { refuseOtherFlags } from "./ca.ts";
import { openLocal, printTable } from "./local.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "kind", value: CERTIFICATE_KINDS.join("|"), help: "list: only certificates of this kind" },
  { name: "status", value: "valid|revoked", help: "list: only certificates in this state" },
  { name: "host", value: "HOSTNAME", help: "list: only the certificates of this host" },
  { name: "json", boolean: true, help: "list: print JSON" },
  { name: "reason", value: "REASON", help: "revoke: why, as the CRL gives it (default unspecified; the reasons are above)" },
];

const usage = `latchkey cert list [--kind ${CERTIFICATE_KINDS.join("|")}] [--status valid|revoked] [--host HOSTNAME] [--json]
       latchkey cert revoke SERIAL [--reason REASON]`;

const description = `Certificates issued by latchkey's CA: the mTLS listener's own (server), hosts' bundles (host),
enrolled clients' (client) and users' (user), newest first. SERIAL is hex as list prints it
(openssl's colon or upper-case forms work too). revoke takes effect at once, also on a running
server: the certificate is refused on its next connection, its open connections close within a
second, and the CRL (GET /api/crl) lists it. REASON is unspecified, keyCompromise,
affiliationChanged, superseded, cessationOfOperation or privilegeWithdrawn. Works on the data
directory directly.`;

const FLAGS_OF: Record<string, string[]> = { list: ["kind", "status", "host", "json"], revoke: ["reason"] };

export async function certCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!(sub in FLAGS_OF)) throw new UsageError(`unknown cert command ${JSON.stringify(sub)}; see latchkey cert --help`);
  refuseOtherFlags(args, "cert", sub, FLAGS_OF[sub]!);
  if (sub === "list") {
    if (rest.length > 0)
      throw new UsageError(`cert list takes no arguments (got ${JSON.stringify(rest[0])}); filter with --kind, --status or --host`);
    const kindFlag = flagValue(args, "kind");
    const kind =
      kindFlag === undefined
        ? undefined
        : check(v.picklist(CERTIFICATE_KINDS, `must be one of ${CERTIFICATE_KINDS.join(", ")}`), kindFlag, spelledFlag(args, "kind"));
    const statusFlag = flagValue(args, "status");
    const status =
      statusFlag === undefined
        ? undefined
        : check(v.picklist(["valid", "revoked"], "must be valid or revoked"), statusFlag, spelledFlag(args, "status"));
    const hostFlag = flagValue(args, "host");
    const host = hostFlag === undefined ? undefined : check(hostname, hostFlag, spelledFlag(args, "host"));
    const { services, close } = await openLocal(args, env);
    try {
      const items: CertificateView[] = [];
      for (let offset = 0; ; offset += 1000) {
        const page = (await services.ca.list(null, { kind, status, hostname: host }, 1000, offset)).items;
        items.push(...page);
        if (page.length < 1000) break;
      }
      if (flagBool(args, "json")) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
      else
        printTable([
          ["SERIAL", "KIND", "COMMON NAME", "HOST", "STATUS", "NOT AFTER", "ROOT"],
          ...items.map((c) => [
            c.serial,
            c.kind,
            c.common_name,
            c.hostname ?? "-",
            c.status === "revoked" ? `revoked (${c.revocation_reason ?? "unspecified"})` : c.expired ? "expired" : "valid",
            c.not_after,
            c.current_root ? "current" : "replaced",
          ]),
        ]);
      return 0;
    } finally {
      await close();
    }
  }
  if (rest.length !== 1) throw new UsageError("cert revoke takes one SERIAL; see latchkey cert list");
  const serial = normalizeSerial(rest[0]!);
  if (serial === null) throw new UsageError(`SERIAL ${JSON.stringify(rest[0])} is not a serial number in hex; see latchkey cert list`);
  const reason = check(
    v.picklist(REVOCATION_REASONS, `must be one of ${REVOCATION_REASONS.join(", ")}`),
    flagValue(args, "reason") ?? "unspecified",
    spelledFlag(args, "reason"),
  );
  const { services, actor, close } = await openLocal(args, env);
  try {
    let revoked: CertificateView;
    try {
      revoked = await services.ca.revoke(actor, serial, reason);
    } catch (error) {
      if (error instanceof AppError && error.code === "not_found")
        throw new AppError("not_found", `${error.message}; see latchkey cert list`);
      throw error;
    }
    process.stdout.write(
      `revoked certificate ${revoked.serial} (${revoked.kind} CN=${revoked.common_name}` +
        `${revoked.hostname ? `, host ${revoked.hostname}` : ""}): ` +
        `${reason}; the CRL lists it\n`,
    );
    return 0;
  } finally {
    await close();
  }
}
