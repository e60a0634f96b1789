/** `latchkey user cert ...`: the certificates users sign in with (`rpc/auth_ssl`), on the data directory directly. */
import * as v from "valibot";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { databaseFlag, dataDirFlag } from "../config.ts";
import { AppError } from "../core/errors.ts";
import { certificateEmail, certificateNickname, username as usernameSchema } from "../core/fields.ts";
import { writeFileAtomic } from "../core/files.ts";
import { DEFAULT_ISSUE_DAYS, type IssuedUserCertificate, type UserCertificateView } from "../core/user-certificates.ts";
import { check, flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec } from "./args.ts";
import { refuseOtherFlags, requireRoot } from "./ca.ts";
import { openLocal, printTable } from "./local.ts";
import { prepareDirectory, sameContent } from "./out-dir.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "csr", value: "FILE", help: "issue: a certificate request (PEM) for a key of the user's own; without it a key is generated" },
  { name: "days", value: "N", help: `issue: how long the certificate is valid, 1 to 3650 days (default ${DEFAULT_ISSUE_DAYS})` },
  { name: "out", value: "DIR", help: "issue: where to write the files (default: the current directory; created 0700 if missing)" },
  { name: "nickname", value: "N", help: "add, issue: a name for the certificate (sysadm's nickname)" },
  { name: "email", value: "E", help: "add, issue: an e-mail address to note with it" },
  { name: "json", boolean: true, help: "list: print JSON" },
];

const usage = `latchkey user cert list [NAME] [--json]
       latchkey user cert add NAME CERT.pem [--nickname N] [--email E]
       latchkey user cert issue NAME [--csr FILE] [--days N] [--out DIR] [--nickname N] [--email E]
       latchkey user cert revoke NAME FINGERPRINT|PUBKEY`;

const description = `Certificates users sign in with, without a password (sysadm rpc/auth_ssl: the client
proves the certificate's private key over a test string). add registers CERT.pem for the user NAME:
a certificate of this server's CA (it must verify: clientAuth, valid, not revoked, issued to a
user) or a self-signed one. issue has this server's CA issue NAME a user certificate (CN=NAME,
clientAuth) and registers it: for the key of the request --csr FILE (its subject is ignored), or
for a key generated here. It writes NAME.pem and rootCA.pem (0644) and, when the key was
generated, NAME.key (0600; kept nowhere else) into DIR, and replaces no file (a rootCA.pem
identical to the root is left as it is). list shows one user's, or everyone's, live and revoked.
revoke takes the certificate's SHA-256 fingerprint (as list prints it, or colon-separated as
openssl does) or the key's pub_key (base64); the certificate no longer signs in, at once, also on
a running server. Works on the data directory directly.`;

const FLAGS_OF: Record<string, string[]> = {
  list: ["json"],
  add: ["nickname", "email"],
  issue: ["csr", "days", "out", "nickname", "email"],
  revoke: [],
};

const daysSchema = v.pipe(
  v.string(),
  v.regex(/^\d{1,4}$/, "must be a whole number from 1 to 3650"),
  v.transform(Number),
  v.minValue(1, "must be a whole number from 1 to 3650"),
  v.maxValue(3650, "must be a whole number from 1 to 3650"),
);

export async function userCertCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!(sub in FLAGS_OF)) throw new UsageError(`unknown user cert command ${JSON.stringify(sub)}; see latchkey user cert --help`);
  refuseOtherFlags(args, "user cert", sub, FLAGS_OF[sub]!);
  const arity: Record<string, [number, number, string]> = {
    list: [0, 1, "[NAME]"],
    add: [2, 2, "NAME CERT.pem"],
    issue: [1, 1, "NAME"],
    revoke: [2, 2, "NAME FINGERPRINT|PUBKEY"],
  };
  const [least, most, shape] = arity[sub]!;
  if (rest.length < least || rest.length > most) throw new UsageError(`user cert ${sub} takes ${shape}; see latchkey user cert --help`);
  const name = rest[0] === undefined ? undefined : check(usernameSchema, rest[0], "NAME");
  let pem = "";
  if (sub === "add") {
    if (!existsSync(rest[1]!)) throw new UsageError(`no such file: ${rest[1]}`);
    pem = readFileSync(rest[1]!, "utf8");
  }
  const nickname = flagValue(args, "nickname");
  const email = flagValue(args, "email");
  if (nickname !== undefined) check(certificateNickname, nickname, spelledFlag(args, "nickname"));
  if (email !== undefined) check(certificateEmail, email, spelledFlag(args, "email"));
  const csrFile = flagValue(args, "csr");
  let csr: string | undefined;
  if (csrFile !== undefined) {
    if (!existsSync(csrFile)) throw new UsageError(`no such file: ${csrFile}`);
    csr = readFileSync(csrFile, "utf8");
  }
  const daysFlag = flagValue(args, "days");
  const days = daysFlag === undefined ? undefined : check(daysSchema, daysFlag, spelledFlag(args, "days"));
  const outFlag = flagValue(args, "out");
  if (outFlag === "") throw new UsageError(`${spelledFlag(args, "out")} needs a directory (. for the current one)`);

  const { services, actor, close } = await openLocal(args, env);
  try {
    const certificates = services.userCertificates;
    switch (sub) {
      case "list": {
        const items: UserCertificateView[] = [];
        for (let offset = 0; ; offset += 1000) {
          const page = (await certificates.list(null, { username: name }, 1000, offset)).items;
          items.push(...page);
          if (page.length < 1000) break;
        }
        if (flagBool(args, "json")) process.stdout.write(JSON.stringify(items, null, 2) + "\n");
        else
          printTable([
            ["USER", "FINGERPRINT", "SUBJECT", "ISSUER", "KEY", "NICKNAME", "NOT AFTER", "STATUS"],
            ...items.map((c) => [
              c.username,
              c.fingerprint ?? "-",
              c.subject ?? "-",
              c.self_signed ? "self-signed" : c.ca_serial ? `this CA (${c.ca_serial})` : (c.issuer ?? "-"),
              c.key_type,
              c.nickname || "-",
              c.not_after ?? "-",
              c.status === "revoked" ? `revoked ${c.revoked_at}` : c.expired ? "expired" : "active",
            ]),
          ]);
        return 0;
      }
      case "add": {
        const added = await certificates.register(actor, null, { username: name, certificate: pem, nickname, email });
        process.stdout.write(
          `registered ${added.self_signed ? "self-signed" : "CA-issued"} certificate ${added.fingerprint} (${added.key_type}) ` +
            `for ${added.username}; it signs in with rpc/auth_ssl\n`,
        );
        return 0;
      }
      case "issue": {
        const user = name!;
        await services.accounts.require(user); // before --out DIR is made for nobody
        const root = (await requireRoot(services.ca)).certificate;
        const dir = outFlag ?? ".";
        const files = { certificate: join(dir, `${user}.pem`), ca: join(dir, "rootCA.pem"), key: join(dir, `${user}.key`) };
        prepareDirectory(
          dir,
          [files.certificate, ...(csr === undefined ? [files.key] : []), ...(sameContent(files.ca, root) ? [] : [files.ca])],
          null,
        );
        let issued: IssuedUserCertificate;
        try {
          issued = await certificates.issue(actor, null, { username: user, csr, days, nickname, email });
        } catch (error) {
          // The core names the field; here the request is a file.
          if (error instanceof AppError && error.field === "csr") throw new AppError(error.code, `${csrFile}: ${error.message}`);
          throw error;
        }
        try {
          if (!sameContent(files.ca, issued.ca)) writeFileAtomic(files.ca, issued.ca, 0o644);
          writeFileAtomic(files.certificate, issued.certificate, 0o644);
          if (issued.key !== undefined) writeFileAtomic(files.key, issued.key, 0o600);
        } catch (error) {
          throw new Error(
            `issued certificate ${issued.ca_serial} for ${user} but could not write its files (${(error as Error).message}); ` +
              `revoke it (latchkey user cert revoke ${user} ${issued.fingerprint}) and issue again with another --out DIR`,
          );
        }
        process.stdout.write(
          `issued certificate ${issued.ca_serial} (${issued.key_type}, fingerprint ${issued.fingerprint}) for ${user}, ` +
            `valid until ${issued.not_after}; registered: it signs in with rpc/auth_ssl\n` +
            (issued.key === undefined ? "" : `wrote ${files.key} (0600: the private key, kept nowhere else)\n`) +
            `wrote ${files.certificate}\n` +
            `wrote ${files.ca}\n`,
        );
        return 0;
      }
      case "revoke": {
        let revoked: UserCertificateView;
        try {
          revoked = await certificates.revoke(actor, null, name, rest[1]!);
        } catch (error) {
          if (error instanceof AppError && error.code === "not_found") {
            throw new AppError("not_found", `${error.message}; see latchkey user cert list ${name}`);
          }
          throw error;
        }
        process.stdout.write(
          `revoked certificate ${revoked.fingerprint ?? revoked.key_id} of ${revoked.username}; it no longer signs in\n`,
        );
        return 0;
      }
      default:
        return 2;
    }
  } finally {
    await close();
  }
}
