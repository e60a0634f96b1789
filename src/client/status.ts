/** `latchkey client status`: what the agent knows, from its state directory and the unit file. */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { serverUrl } from "./agent.ts";
import { maskSecret } from "../core/secrets.ts";
import { KEY_FILE, readConfig, readKey, readLastContact } from "./config.ts";
import { clientCommandLine, UNIT_NAME } from "./install.ts";

export function statusReport(
  stateDir: string,
  unitDir: string,
  env: Record<string, string | undefined>,
): { lines: [string, string][]; installed: boolean } {
  const config = readConfig(stateDir);
  const key = readKey(stateDir);
  const unitPath = join(unitDir, UNIT_NAME);
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
    ["last contact", readLastContact(stateDir) ?? "never"],
    ["service", existsSync(unitPath) ? `installed (${unitPath})` : "not installed"],
  ];
  return { lines, installed: config !== null };
}
