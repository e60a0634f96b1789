/**
 * A throwaway PostgreSQL cluster for tests: Debian's PostgreSQL server (its `initdb` and `pg_ctl`
 * live in the package's own bin directory, not on the PATH), initialised as the `postgres` user
 * (the server refuses to run as root) into a temporary directory, listening on 127.0.0.1 on a
 * free port with trust authentication, and removed again by `stop()`.
 */
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The bin directory of the newest PostgreSQL server installed, or null. */
export function postgresBin(): string | null {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0]!, "bin") : null;
}

/** A port nothing listens on right now. */
function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

async function run(cmd: string[], what: string): Promise<void> {
  const proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`${what} failed (exit ${code}): ${err || out}`);
}

export interface PostgresCluster {
  /** `postgres://latchkey@127.0.0.1:PORT/postgres` */
  url: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

/** Starts a new cluster; fsync is off (a test's data need not survive a power cut). */
export async function startPostgres(): Promise<PostgresCluster> {
  const bin = postgresBin();
  if (bin === null)
    throw new Error("PostgreSQL's server is not installed: apt-get install -y postgresql (npm test's pretest does it as root)");
  const dir = mkdtempSync(join(tmpdir(), "latchkey-pg-"));
  const user = Bun.spawnSync(["id", "-u", "postgres"]).stdout.toString().trim();
  const group = Bun.spawnSync(["id", "-g", "postgres"]).stdout.toString().trim();
  chownSync(dir, Number(user), Number(group));
  const asPostgres = (args: string[]) => ["runuser", "-u", "postgres", "--", ...args];
  const data = join(dir, "data");
  const port = freePort();
  try {
    await run(asPostgres([join(bin, "initdb"), "-D", data, "-U", "latchkey", "-A", "trust", "--no-sync", "-E", "UTF8"]), "initdb");
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
    await run(asPostgres([join(bin, "pg_ctl"), "-D", data, "-o", options, "-l", join(dir, "server.log"), "-w", "start"]), "pg_ctl start");
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  // The cluster goes when this process does, however it ends (bun test runs no exit handlers).
  const pgCtl = join(bin, "pg_ctl");
  const watchdog = Bun.spawn(
    [
      "setsid",
      "sh",
      "-c",
      `while kill -0 ${process.pid} 2>/dev/null && [ -d '${data}' ]; do sleep 1; done; ` +
        `runuser -u postgres -- '${pgCtl}' -D '${data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '${dir}'`,
    ],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
  );
  watchdog.unref();
  return {
    url: `postgres://latchkey@127.0.0.1:${port}/postgres`,
    port,
    dir,
    async stop() {
      await run(asPostgres([join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"]), "pg_ctl stop").catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let shared: Promise<PostgresCluster> | null = null;

/**
 * A new, empty database in this process's shared throwaway cluster (started on first use,
 * stopped when the process exits): one per test server, so that tests never see each other's rows.
 */
export async function freshDatabase(): Promise<string> {
  shared ??= startPostgres();
  const cluster = await shared;
  const name = `t_${crypto.randomUUID().replaceAll("-", "")}`;
  const admin = new Bun.SQL(cluster.url, { max: 1 });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.close();
  }
  return cluster.url.replace(/\/postgres$/, `/${name}`);
}
