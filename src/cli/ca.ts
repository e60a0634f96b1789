/** `latchkey ca ...`: the built-in certificate authority's root, shown or replaced, on the data directory directly. */
import { X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { databaseFlag, dataDirFlag } from "../config.ts";
import type { CertificateAuthority, RootView } from "../core/ca/authority.ts";
import { AppError } from "../core/errors.ts";
import { flagBool, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec, type ParsedArgs } from "./args.ts";
import { openLocal } from "./local.ts";

const flags: FlagSpec[] = [
  dataDirFlag,
  databaseFlag,
  { name: "json", boolean: true, help: "show: print JSON" },
  { name: "pem", boolean: true, help: "show: print the root certificate as PEM (never the key)" },
  {
    name: "force",
    boolean: true,
    help: "import: replace the root even while certificates of the current one are in use (they are revoked)",
  },
];

const usage = `latchkey ca show [--json | --pem]
       latchkey ca import CERT.pem KEY.pem [--force]`;

const description = `The root certificate authority that signs the mTLS listener's certificate and the hosts' and
clients' certificates. The server's first start generates one (ECDSA P-256, ten years); until then
there is no database to hold it, so start the server once before these commands.

show prints the root's subject, serial, SHA-256 fingerprint (as openssl x509 -fingerprint -sha256
prints it), validity and whether it was generated or imported.

import replaces it with your own root (e.g. rootCA.pem and rootCA.key of an existing woodstock
setup): a self-signed CA certificate and its unencrypted private key (PKCS#8, EC or RSA PEM). The
key is kept in the database, which backups carry. Every certificate of the old root stops
verifying, so while some are in use (other than the listener's own) the import is refused unless
--force is given; either way they are all revoked and the old root signs nothing more. The mTLS
listener takes a certificate from the new root (a running server's, within a second).
Importing the current root again changes nothing. Works on the data directory directly.`;

/** Which flags each subcommand takes (besides --data-dir and --database). */
const FLAGS_OF: Record<string, string[]> = { show: ["json", "pem"], import: ["force"] };

/** Root files larger than this are not what the user meant to give (a PEM root or key is a few kilobytes). */
const MAX_PEM_BYTES = 1024 * 1024;

export async function caCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!(sub in FLAGS_OF)) throw new UsageError(`unknown ca command ${JSON.stringify(sub)}; see latchkey ca --help`);
  refuseOtherFlags(args, "ca", sub, FLAGS_OF[sub]!);
  if (sub === "show") {
    if (rest.length > 0) throw new UsageError(`ca show takes no arguments (got ${JSON.stringify(rest[0])})`);
    const json = flagBool(args, "json") ?? false;
    const pem = flagBool(args, "pem") ?? false;
    if (json && pem) throw new UsageError(`give ${spelledFlag(args, "json")} or ${spelledFlag(args, "pem")}, not both`);
    const { services, close } = await openLocal(args, env);
    try {
      const root = await requireRoot(services.ca);
      if (pem) process.stdout.write(root.certificate);
      else if (json) process.stdout.write(JSON.stringify({ ...root, subject: subject(root), key_type: keyKind(root) }, null, 2) + "\n");
      else process.stdout.write(describeRoot(root));
      return 0;
    } finally {
      await close();
    }
  }
  if (rest.length !== 2)
    throw new UsageError("ca import takes two files: the root certificate and its private key (ca import rootCA.pem rootCA.key)");
  const certificatePem = readPemFile(rest[0]!, "the root certificate");
  const keyPem = readPemFile(rest[1]!, "the root's private key");
  const { services, actor, close } = await openLocal(args, env);
  try {
    const before = await currentRoot(services.ca);
    const inUse = before === null ? [] : await validOfCurrentRoot(services.ca);
    let root: RootView;
    try {
      root = await services.ca.importRoot(actor, certificatePem, keyPem, { force: flagBool(args, "force") ?? false });
    } catch (error) {
      throw importRefusal(error, rest[0]!, rest[1]!);
    }
    if (before?.fingerprint === root.fingerprint) {
      process.stdout.write(`${rest[0]} is already the root CA (${root.fingerprint_colon}); nothing changed\n`);
      return 0;
    }
    process.stdout.write("imported the root CA:\n" + describeRoot(root).replace(/^(?=.)/gm, "  "));
    if (before !== null) {
      const revoked: { serial: string; kind: string }[] = [];
      for (const c of inUse) if ((await services.ca.get(null, c.serial)).status === "revoked") revoked.push(c);
      const counts = new Map<string, number>();
      for (const c of revoked) counts.set(c.kind, (counts.get(c.kind) ?? 0) + 1);
      const byKind = [...counts].map(([kind, n]) => `${n} ${kind}`);
      process.stdout.write(
        `replaced the ${before.source} root ${before.fingerprint_colon}; it signs nothing more\n` +
          `revoked ${revoked.length} certificate${revoked.length === 1 ? "" : "s"} of the old root` +
          `${revoked.length ? ` (${byKind.join(", ")})` : ""}\n` +
          (counts.has("host") ? "hosts need new bundles from the new root: latchkey host bundle HOSTNAME --force\n" : "") +
          "the mTLS listener takes a certificate from the new root (a running server's within a second)\n" +
          "clients that pin the old root (latchkey client install -ca-fingerprint) must pin the new fingerprint\n",
      );
    }
    return 0;
  } finally {
    await close();
  }
}

/** The current root; a failure with a remedy when the server has not made one yet. */
export async function requireRoot(ca: CertificateAuthority): Promise<RootView> {
  const root = await currentRoot(ca);
  if (root === null) {
    throw new AppError(
      "unavailable",
      "there is no root CA yet: start the server once (it generates one), or import yours with latchkey ca import rootCA.pem rootCA.key",
    );
  }
  return root;
}

async function currentRoot(ca: CertificateAuthority): Promise<RootView | null> {
  try {
    return await ca.root();
  } catch (error) {
    if (error instanceof AppError && error.code === "unavailable") return null;
    throw error;
  }
}

/** A usage error for a flag given to a subcommand that does not take it. */
export function refuseOtherFlags(args: ParsedArgs, command: string, sub: string, allowed: readonly string[]): void {
  for (const name of args.flags.keys()) {
    if (name === "data-dir" || name === "database" || allowed.includes(name)) continue;
    throw new UsageError(`${command} ${sub} does not take ${spelledFlag(args, name)}; see latchkey ${command} --help`);
  }
}

/** The subject's whole name, in the certificate's order (as openssl prints it), and what its key is. */
function subject(root: RootView): string {
  return new X509Certificate(root.certificate).subject.split("\n").join(", ") || "(empty)";
}

function keyKind(root: RootView): string {
  const key = new X509Certificate(root.certificate).publicKey;
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "ec") return `EC ${details.namedCurve === "prime256v1" ? "P-256" : (details.namedCurve ?? "")}`.trim();
  if (key.asymmetricKeyType === "rsa") return `RSA ${details.modulusLength ?? ""}`.trim();
  return key.asymmetricKeyType ?? "unknown";
}

function describeRoot(root: RootView): string {
  return (
    `subject      ${subject(root)}\n` +
    `key          ${keyKind(root)}\n` +
    `serial       ${root.serial}\n` +
    `fingerprint  ${root.fingerprint_colon} (SHA-256)\n` +
    `valid        ${root.not_before} to ${root.not_after}\n` +
    `source       ${root.source} by ${root.created_by} at ${root.created_at}\n`
  );
}

/** The serials of the current root's valid certificates, which an import revokes. */
async function validOfCurrentRoot(ca: CertificateAuthority): Promise<{ serial: string; kind: string }[]> {
  const found: { serial: string; kind: string }[] = [];
  for (let offset = 0; ; offset += 1000) {
    const { items } = await ca.list(null, { status: "valid" }, 1000, offset);
    found.push(...items.filter((c) => c.current_root).map((c) => ({ serial: c.serial, kind: c.kind })));
    if (items.length < 1000) return found;
  }
}

/** The core's refusal, naming the file it is about (its message says what is wrong with it). */
function importRefusal(error: unknown, certificateFile: string, keyFile: string): unknown {
  if (!(error instanceof AppError)) return error;
  if (error.field === "certificate") return new AppError(error.code, `${certificateFile} ${error.message}`);
  if (error.field === "key") return new AppError(error.code, `${keyFile} ${error.message}`);
  if (error.code === "conflict") return new AppError(error.code, `${error.message} (add --force)`);
  return error;
}

/**
 * A PEM file's text. A path that is not there, or not a file, is a usage error; one this user may
 * not read (a root key is often 0600 and someone else's) is a failure that says whose it is.
 */
function readPemFile(path: string, what: string): string {
  let size: number;
  let owner: number;
  let mode: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new UsageError(`${path} is not a file; give the path of ${what} (PEM)`);
    ({ size, uid: owner, mode } = stat);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new UsageError(`no such file: ${path}; give the path of ${what} (PEM)`);
    throw new Error(`cannot look at ${path} (${code ?? String(error)}); check the path and its directories' permissions`);
  }
  if (size > MAX_PEM_BYTES) throw new UsageError(`${path} is ${size} bytes, too large for ${what}; is it the right file?`);
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM") {
      const octal = (mode & 0o777).toString(8).padStart(4, "0");
      throw new Error(
        `cannot read ${path}: permission denied (mode ${octal}, owner uid ${owner}, you are uid ${process.getuid?.() ?? "?"}); ` +
          "run latchkey as a user who can read it (e.g. with sudo), or give a copy you can read",
      );
    }
    throw new Error(`cannot read ${path} (${code ?? String(error)})`);
  }
}
