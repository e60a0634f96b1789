/**
 * compose.yaml and the placeholders of deploy/nginx.conf. There is no Docker engine here: the file
 * is checked by Compose itself (`docker-compose config`, Debian's v1, and `docker compose config`
 * where the v2 plugin exists), and read as YAML for what docs/scale-out.md promises: PostgreSQL
 * with a health check, three nodes from the Dockerfile on it, nginx in front, only nginx published.
 * The cluster itself runs in test/cluster.test.ts (nginx rendered from the same template).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./support.ts";

const COMPOSE = join(ROOT, "compose.yaml");
const REQUIRED = { LATCHKEY_ADMIN_PASSWORD: "compose test password", LATCHKEY_DB_PASSWORD: "compose-test-db" };

/** The Compose commands present: the v1 program and the v2 plugin of the docker CLI. */
function composeCommands(): string[][] {
  const found: string[][] = [];
  if (Bun.which("docker-compose") !== null) found.push(["docker-compose"]);
  if (
    Bun.which("docker") !== null &&
    Bun.spawnSync(["docker", "compose", "version"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0
  )
    found.push(["docker", "compose"]);
  return found;
}

function runCompose(command: string[], env: Record<string, string>) {
  const result = Bun.spawnSync([...command, "-f", COMPOSE, "config", "-q"], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: result.exitCode, output: result.stdout.toString() + result.stderr.toString() };
}

const commands = composeCommands();

describe("compose.yaml", () => {
  const composeCheck =
    commands.length > 0
      ? `${commands.map((c) => c.join(" ")).join(" and ")} ` +
        (commands.length === 1 ? "accepts it, and refuses it" : "accept it, and refuse it") +
        " without the required passwords"
      : "Compose accepts it (skipped: neither docker-compose nor the docker compose plugin is installed)";
  test.skipIf(commands.length === 0)(composeCheck, () => {
    for (const command of commands) {
      const ok = runCompose(command, REQUIRED);
      expect({ command: command.join(" "), ...ok }).toEqual({ command: command.join(" "), code: 0, output: "" });
      const missing = runCompose(command, { LATCHKEY_DB_PASSWORD: REQUIRED.LATCHKEY_DB_PASSWORD });
      expect(missing.code).not.toBe(0);
      expect(missing.output).toContain("set LATCHKEY_ADMIN_PASSWORD");
    }
  });

  const hasYaml = typeof Bun.YAML?.parse === "function";
  const yamlCheck =
    "services: postgres, three nodes from the Dockerfile, nginx in front" + (hasYaml ? "" : " (skipped: this Bun has no Bun.YAML)");
  test.skipIf(!hasYaml)(yamlCheck, () => {
    const compose = Bun.YAML.parse(readFileSync(COMPOSE, "utf8")) as any;
    expect(Object.keys(compose.services).sort()).toEqual(["nginx", "node1", "node2", "node3", "postgres"]);
    const { postgres, nginx } = compose.services;
    expect(postgres.image).toBe("postgres:15");
    expect(postgres.healthcheck.test).toContain("pg_isready");
    expect(postgres.volumes).toEqual(["postgres-data:/var/lib/postgresql/data"]);
    for (const name of ["node1", "node2", "node3"]) {
      const node = compose.services[name];
      expect(node.build).toBe(".");
      expect(node.environment.LATCHKEY_DATABASE_URL).toStartWith("postgres://latchkey:${LATCHKEY_DB_PASSWORD:?");
      expect(node.environment.LATCHKEY_ADMIN_PASSWORD).toStartWith("${LATCHKEY_ADMIN_PASSWORD:?");
      // Trusted: exactly nginx's fixed address.
      expect(node.environment.LATCHKEY_TRUSTED_PROXY).toBe(`${nginx.networks.edge.ipv4_address}/32`);
      expect(node.depends_on.postgres).toEqual({ condition: "service_healthy" });
      expect(node.ports).toBeUndefined();
    }
    expect(Object.keys(compose.services).filter((name) => compose.services[name].ports !== undefined)).toEqual(["nginx"]);
    expect(nginx.volumes).toEqual(["./deploy/nginx.conf:/etc/latchkey/nginx.conf.template:ro"]);
    expect(nginx.command.join(" ")).toContain("s/{{NODE1}}/node1:9000/");
  });
});

describe("deploy/nginx.conf's placeholders", () => {
  const template = readFileSync(join(ROOT, "deploy/nginx.conf"), "utf8");
  // In directives only: the comment at the top names them too.
  const used = new Set(
    template
      .split("\n")
      .filter((line) => !line.trim().startsWith("#"))
      .flatMap((line) => [...line.matchAll(/\{\{([A-Z0-9_]+)\}\}/g)].map((m) => m[1]!)),
  );
  /** The names a sed script fills in: `s/{{NAME}}/…/` or `s#{{NAME}}#…#`. */
  const filled = (text: string) => new Set([...text.matchAll(/s([/#])\{\{([A-Z0-9_]+)\}\}\1/g)].map((m) => m[2]!));

  test("are LISTEN, NODE1-3, ERROR_LOG and ACCESS_LOG", () => {
    expect([...used].sort()).toEqual(["ACCESS_LOG", "ERROR_LOG", "LISTEN", "NODE1", "NODE2", "NODE3"]);
  });

  test("compose.yaml's nginx entrypoint and scripts/cluster.sh fill in every one", () => {
    expect(filled(readFileSync(COMPOSE, "utf8"))).toEqual(used);
    expect(filled(readFileSync(join(ROOT, "scripts/cluster.sh"), "utf8"))).toEqual(used);
  });
});
