/** `latchkey client ...`: the agent that runs on an enrolled machine. */
import { resolve } from "node:path";
import { mtlsSocketUrl, runAgent, serverUrl } from "../client/agent.ts";
import { colonFingerprint, DEFAULT_MTLS_PORT, normalizeFingerprint, resolveStateDir } from "../client/config.ts";
import { clientCommandLine, install, SYSTEM_UNIT_DIR, uninstall } from "../client/install.ts";
import { statusReport } from "../client/status.ts";
import { flagBool, flagValue, parseArgs, renderHelp, spelledFlag, UsageError, type FlagSpec, type ParsedArgs } from "./args.ts";

const flags: FlagSpec[] = [
  { name: "server", value: "HOST:PORT", help: "install: the server to register with (also ws:// or wss:// URL)" },
  { name: "name", value: "NAME", help: "install: this machine's name on the server (default: its hostname)" },
  { name: "key", value: "XXXX-XXXX-XXXX", help: "install: the pre-shared key; replaces a saved one" },
  {
    name: "ca-fingerprint",
    value: "SHA256",
    help: "install: the SHA-256 of the server's root CA (latchkey ca show); registers over TLS trusting only that root",
  },
  { name: "mtls-port", value: "PORT", help: `install: the server's mutual-TLS listener port (default ${DEFAULT_MTLS_PORT})` },
  { name: "report-port", value: "PORT", help: "install: the port this machine's host reports announce (default 0)" },
  { name: "no-service", boolean: true, help: "install: save the settings only, without the systemd unit" },
  { name: "purge", boolean: true, help: "uninstall: also delete the saved state (UUID, keys, certificate, settings)" },
  { name: "heartbeat", value: "SECONDS", help: "run: seconds between heartbeats (default 60)" },
  { name: "retry-max", value: "SECONDS", help: "run: longest wait between reconnection attempts (default 60)" },
  { name: "report-interval", value: "SECONDS", help: "run: seconds between host reports over mTLS (default 60)" },
  {
    name: "state-dir",
    value: "DIR",
    help: "where the settings and key live (env LATCHKEY_CLIENT_DIR; default /var/lib/latchkey as root, else ~/.config/latchkey)",
  },
  { name: "unit-dir", value: "DIR", help: `where the systemd unit goes (default ${SYSTEM_UNIT_DIR})` },
];

const usage = `latchkey client install -server HOST:PORT [-name NAME] [-key KEY] [-ca-fingerprint SHA256] [-mtls-port PORT]
                              [-report-port PORT] [--no-service]
       latchkey client run [--heartbeat SECONDS] [--retry-max SECONDS] [--report-interval SECONDS]
       latchkey client status
       latchkey client uninstall [--purge]`;

const description = `The client agent. install saves the server address, this machine's name (its hostname unless
-name), a stable client UUID (kept across reinstalls), the key (mode 0600) and the pinned root CA
fingerprint, then installs and enables the systemd unit latchkey-client.service, which runs
'latchkey client run'. Running install again with a new -key replaces the key.
run registers with the server over its /ws WebSocket (with -ca-fingerprint: over TLS to the
mutual-TLS listener, after checking that the server's root CA is the pinned one; another root is
refused with exit 3 and the key is not sent), stays connected and reconnects with backoff; if the
server requires a key and none is saved it asks for one on a terminal, and otherwise stops (exit
3) saying how to reinstall with -key. Once registered it obtains a client certificate (its key
stays in client.key, mode 0600), renews it at 2/3 of its lifetime, connects over mutual TLS with
it and sends a host report every --report-interval seconds.`;

function seconds(args: ParsedArgs, name: string, fallback: number): number {
  const raw = flagValue(args, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || value < 0.1 || value > 86_400)
    throw new UsageError(`${spelledFlag(args, name)} must be a number of seconds from 0.1 to 86400`);
  return value;
}

function serverAddress(args: ParsedArgs): string {
  const raw = flagValue(args, "server");
  if (raw === undefined) throw new UsageError("install needs the server: latchkey client install -server HOST:PORT -key XXXX-XXXX-XXXX");
  const value = raw.trim();
  if (/^(wss?|https?):\/\/[^\s/]+(\/\S*)?$/i.test(value) || /^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$/.test(value))
    return value;
  throw new UsageError(
    `${spelledFlag(args, "server")} ${JSON.stringify(raw)} must be HOST:PORT (e.g. example.com:9000) or a ws:// / wss:// URL`,
  );
}

function port(args: ParsedArgs, name: string): number | undefined {
  const raw = flagValue(args, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || value > 65535) throw new UsageError(`${spelledFlag(args, name)} must be a port number from 0 to 65535`);
  if (name === "mtls-port" && value === 0) throw new UsageError(`${spelledFlag(args, name)} must be a port number from 1 to 65535`);
  return value;
}

function fingerprint(args: ParsedArgs): string | undefined {
  const raw = flagValue(args, "ca-fingerprint");
  if (raw === undefined) return undefined;
  const value = normalizeFingerprint(raw);
  if (value === null)
    throw new UsageError(
      `${spelledFlag(args, "ca-fingerprint")} must be the SHA-256 fingerprint of the server's root CA: 64 hex digits, ` +
        "with or without colons, as latchkey ca show prints it",
    );
  return value;
}

function text(args: ParsedArgs, name: string): string | undefined {
  const raw = flagValue(args, name);
  if (raw === undefined) return undefined;
  const value = raw.trim();
  if (value === "" || value.length > 64 || /\p{Cc}/u.test(value))
    throw new UsageError(`${spelledFlag(args, name)} must be 1 to 64 characters without control characters`);
  return value;
}

export async function clientCommand(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const args = parseArgs(argv, flags);
  const [sub, ...rest] = args.positionals;
  if (args.help || sub === undefined) {
    process.stdout.write(renderHelp(usage, description, flags));
    return sub === undefined && !args.help ? 2 : 0;
  }
  if (!["install", "run", "status", "uninstall"].includes(sub))
    throw new UsageError(`unknown client command ${JSON.stringify(sub)}; see latchkey client --help`);
  if (rest.length > 0) throw new UsageError(`client ${sub} takes no arguments (got ${JSON.stringify(rest[0])}); flags start with -`);
  const stateDir = resolveStateDir(flagValue(args, "state-dir"), env);
  const unitDir = flagValue(args, "unit-dir") ?? SYSTEM_UNIT_DIR;
  switch (sub) {
    case "install": {
      const result = install({
        stateDir,
        unitDir,
        server: serverAddress(args),
        name: text(args, "name"),
        key: text(args, "key"),
        caFingerprint: fingerprint(args),
        mtlsPort: port(args, "mtls-port"),
        reportPort: port(args, "report-port"),
        service: !(flagBool(args, "no-service") ?? false),
      });
      // The next step is a command that works as printed: with --state-dir when it is not the default.
      const start = `start the agent with: ${clientCommandLine("run", [], stateDir, env)}`;
      const notEnabled = resolve(unitDir) === SYSTEM_UNIT_DIR ? "systemctl is not available" : `${unitDir} is not ${SYSTEM_UNIT_DIR}`;
      const out = [
        `client ${result.config.name} (uuid ${result.config.uuid}${result.createdUuid ? ", new" : ", kept"}) ` +
          `will register with ${result.config.server}`,
        `settings saved in ${stateDir}${result.keySaved ? " (key saved, mode 0600)" : ""}`,
        result.config.ca_fingerprint === undefined
          ? `no pinned root CA (-ca-fingerprint): registers over ${serverUrl(result.config.server)}`
          : `pinned root CA ${colonFingerprint(result.config.ca_fingerprint)}: registers over TLS at ${mtlsSocketUrl(result.config)}`,
        result.unitPath === null
          ? `no systemd unit (--no-service); ${start}`
          : result.enabled
            ? `systemd unit written to ${result.unitPath} and enabled`
            : `systemd unit written to ${result.unitPath}, not enabled (${notEnabled}); ${start}`,
      ];
      process.stdout.write(out.join("\n") + "\n");
      return 0;
    }
    case "run":
      return runAgent({
        stateDir,
        heartbeatSeconds: seconds(args, "heartbeat", 60),
        retryMaxSeconds: seconds(args, "retry-max", 60),
        reportIntervalSeconds: seconds(args, "report-interval", 60),
        interactive: process.stdin.isTTY === true,
      });
    case "status": {
      const { lines, installed } = statusReport(stateDir, unitDir, env);
      const width = Math.max(...lines.map(([k]) => k.length)) + 1;
      process.stdout.write(lines.map(([k, v]) => `${`${k}:`.padEnd(width)}  ${v}`).join("\n") + "\n");
      return installed ? 0 : 1;
    }
    default: {
      const { unitRemoved, purged } = uninstall({ stateDir, unitDir, purge: flagBool(args, "purge") ?? false });
      process.stdout.write(`${unitRemoved ? `removed ${unitRemoved}` : "no systemd unit was installed"}\n`);
      if (purged.length > 0) process.stdout.write(`deleted ${purged.join(", ")}\n`);
      return 0;
    }
  }
}
