/**
 * `latchkey client install` / `uninstall`: the saved state and the systemd unit
 * `latchkey-client.service` that runs `latchkey client run`.
 */
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { writeFileAtomic } from "../core/files.ts";
import {
  ensureStateDir,
  machineHostname,
  purgeState,
  readConfig,
  SERVICE_STATE_DIR,
  stateDirFlag,
  writeConfig,
  writeKey,
  type ClientConfig,
} from "./config.ts";

export const UNIT_NAME = "latchkey-client.service";
export const SYSTEM_UNIT_DIR = "/etc/systemd/system";

/** The agent exits with this code when only an operator can fix things; systemd must not restart it then. */
export const EXIT_NEEDS_OPERATOR = 3;

export interface InstallOptions {
  stateDir: string;
  unitDir: string;
  server: string;
  name?: string | undefined;
  key?: string | undefined;
  /** The pinned root's SHA-256 (normalized: 64 lower-case hex digits). */
  caFingerprint?: string | undefined;
  mtlsPort?: number | undefined;
  reportPort?: number | undefined;
  service: boolean;
}

export interface InstallResult {
  config: ClientConfig;
  createdUuid: boolean;
  keySaved: boolean;
  unitPath: string | null;
  enabled: boolean;
}

/** The command that runs this very program: the compiled binary, or bun + the source entry point. */
export function selfCommand(): string[] {
  return Bun.main.endsWith(".ts") ? [process.execPath, Bun.main] : [process.execPath];
}

/** A command line to print for a POSIX shell, each word quoted where it needs to be. */
export function shellCommand(words: readonly string[]): string {
  return words.map((word) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`)).join(" ");
}

/** `latchkey client <sub> ...` as this very program, with --state-dir when that is not the default. */
export function clientCommandLine(sub: string, args: readonly string[], stateDir: string, env: Record<string, string | undefined>): string {
  return shellCommand([...selfCommand(), "client", sub, ...args, ...stateDirFlag(stateDir, env)]);
}

function quoteForSystemd(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/(["\\])/g, "\\$1")}"`;
}

/** The unit: restarted on failure, except when the agent said an operator must act (exit 3). */
export function unitText(stateDir: string): string {
  const command = [...selfCommand(), "client", "run"];
  // The service runs as root, whose default state dir is /var/lib/latchkey; any other is named.
  if (resolve(stateDir) !== SERVICE_STATE_DIR) command.push("--state-dir", resolve(stateDir));
  return `[Unit]
Description=latchkey client agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=${command.map(quoteForSystemd).join(" ")}
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=${EXIT_NEEDS_OPERATOR}

[Install]
WantedBy=multi-user.target
`;
}

/** systemctl is called only for the real unit directory, and only where it exists. */
function systemctl(unitDir: string, ...args: string[]): boolean {
  if (resolve(unitDir) !== SYSTEM_UNIT_DIR) return false;
  const path = Bun.which("systemctl");
  if (!path) return false;
  const result = Bun.spawnSync([path, ...args], { stdout: "ignore", stderr: "pipe" });
  if (result.exitCode !== 0)
    throw new Error(`systemctl ${args.join(" ")} failed: ${result.stderr.toString().trim() || `exit ${result.exitCode}`}`);
  return true;
}

export function install(options: InstallOptions): InstallResult {
  ensureStateDir(options.stateDir);
  const previous = readConfig(options.stateDir);
  // The UUID is the machine's identity on the server: a reinstall keeps it.
  const uuid = previous?.uuid ?? crypto.randomUUID();
  const config: ClientConfig = { server: options.server, name: options.name ?? previous?.name ?? machineHostname(), uuid };
  // A reinstall that does not name them (the woho remedy, a new -key) keeps the pin and the ports.
  const pin = options.caFingerprint ?? previous?.ca_fingerprint;
  const mtlsPort = options.mtlsPort ?? previous?.mtls_port;
  const reportPort = options.reportPort ?? previous?.report_port;
  if (pin !== undefined) config.ca_fingerprint = pin;
  if (mtlsPort !== undefined) config.mtls_port = mtlsPort;
  if (reportPort !== undefined) config.report_port = reportPort;
  writeConfig(options.stateDir, config);
  if (options.key !== undefined) writeKey(options.stateDir, options.key);
  let unitPath: string | null = null;
  let enabled = false;
  if (options.service) {
    mkdirSync(options.unitDir, { recursive: true, mode: 0o755 });
    unitPath = join(options.unitDir, UNIT_NAME);
    writeFileAtomic(unitPath, unitText(options.stateDir), 0o644);
    if (systemctl(options.unitDir, "daemon-reload")) {
      systemctl(options.unitDir, "enable", "--now", UNIT_NAME);
      enabled = true;
    }
  }
  return { config, createdUuid: previous === null, keySaved: options.key !== undefined, unitPath, enabled };
}

export function uninstall(options: { stateDir: string; unitDir: string; purge: boolean }): {
  unitRemoved: string | null;
  purged: string[];
} {
  const unitPath = join(options.unitDir, UNIT_NAME);
  let unitRemoved: string | null = null;
  if (existsSync(unitPath)) {
    systemctl(options.unitDir, "disable", "--now", UNIT_NAME);
    rmSync(unitPath, { force: true });
    systemctl(options.unitDir, "daemon-reload");
    unitRemoved = unitPath;
  }
  return { unitRemoved, purged: options.purge ? purgeState(options.stateDir) : [] };
}
