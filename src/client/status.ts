/** `latchkey client status`: what the agent knows, from its state directory and the unit file. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { mtlsSocketUrl, serverUrl } from "./agent.ts";
import { maskSecret } from "../core/secrets.ts";
import { certificateFingerprint, identityState, loadIdentity, readRoot } from "./certificate.ts";
import { CLIENT_CERT_FILE, colonFingerprint, KEY_FILE, readConfig, readKey, readLastContact, type ClientConfig } from "./config.ts";
import { clientCommandLine, UNIT_NAME } from "./install.ts";
import { describeReport, readLastReport } from "./report.ts";

/** The certificate line, and whether the agent connects over mTLS with it. */
function certificateLines(stateDir: string, config: ClientConfig | null, now: number): [string, string][] {
  const loaded = loadIdentity(stateDir);
  const pin = config?.ca_fingerprint;
  const root = readRoot(stateDir);
  const rootFingerprint = root === null ? null : certificateFingerprint(root);
  let certificate = "none (asked for after the next registration)";
  let usable = false;
  if (loaded !== null && "why" in loaded) certificate = `unusable: ${loaded.why} (${join(stateDir, CLIENT_CERT_FILE)})`;
  if (loaded !== null && "identity" in loaded) {
    const { identity } = loaded;
    const state = identityState(identity, now);
    const iso = (ms: number) => new Date(ms).toISOString();
    const about = `serial ${identity.serial}, CN=${identity.commonName}, expires ${iso(identity.notAfter)}`;
    if (pin !== undefined && rootFingerprint !== pin) certificate = `${about}; from another root CA than the pinned one, to be replaced`;
    else if (!state.usable) certificate = `${about}; unusable: ${state.why}, to be replaced`;
    else {
      usable = true;
      certificate = `${about}${state.renew ? "; renewal due now" : `; renewal due from ${iso(identity.renewAt)}`}`;
    }
  }
  const lines: [string, string][] = [
    ["ca pin", pin === undefined ? "none (-ca-fingerprint not given)" : `${colonFingerprint(pin)} (SHA-256 of the server's root CA)`],
    [
      "root ca",
      root === null ? "none yet" : `${rootFingerprint ? colonFingerprint(rootFingerprint) : "unreadable"} (${join(stateDir, "ca.pem")})`,
    ],
    ["certificate", certificate],
  ];
  if (config) {
    const mtls = mtlsSocketUrl(config);
    lines.push([
      "mtls",
      usable
        ? `yes: connects to ${mtls} with the certificate`
        : `not yet: registers with the key at ${pin === undefined ? serverUrl(config.server) : mtls}, then asks for a certificate`,
    ]);
  }
  return lines;
}

export function statusReport(
  stateDir: string,
  unitDir: string,
  env: Record<string, string | undefined>,
  now = Date.now(),
): { lines: [string, string][]; installed: boolean } {
  const config = readConfig(stateDir);
  const key = readKey(stateDir);
  const unitPath = join(unitDir, UNIT_NAME);
  const report = readLastReport(stateDir);
  const lines: [string, string][] = [
    ["state dir", stateDir],
    [
      "server",
      config
        ? `${config.server} (${serverUrl(config.server)})`
        : `not installed (run ${clientCommandLine("install", ["-server", "HOST:PORT"], stateDir, env)})`,
    ],
    ["name", config?.name ?? "-"],
    ["uuid", config?.uuid ?? "-"],
    ["key", key ? `${maskSecret(key)} (${join(stateDir, KEY_FILE)})` : "none"],
    ...certificateLines(stateDir, config, now),
    ["last contact", readLastContact(stateDir) ?? "never"],
    [
      "last report",
      report === null ? "never" : `${report.at} ${report.ok ? `ok (${report.status})` : `failed: ${describeReport(report)}`}`,
    ],
    ["service", existsSync(unitPath) ? `installed (${unitPath})` : "not installed"],
  ];
  return { lines, installed: config !== null };
}
