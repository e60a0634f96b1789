/**
 * `latchkey server`: checks that it can listen, opens the data directory, bootstraps on first
 * start, listens, and shuts down gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight
 * requests, close WebSockets with a reason, checkpoint the database).
 */
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createApp, type App } from "./app.ts";
import type { Registry } from "./rpc/registry.ts";
import { serviceOptions, type Config } from "./config.ts";
import type { AuditEntry } from "./core/audit.ts";
import type { Clock } from "./core/clock.ts";
import { AppError } from "./core/errors.ts";
import { createServices, type Services } from "./core/services.ts";
import type { ThrottleNews } from "./core/shared-throttle.ts";
import { DATABASE_FILE } from "./db/open.ts";
import { openPostgresStorage, openSqliteStorage, type Storage } from "./db/storage.ts";
import { TrustedProxies } from "./http/client-address.ts";
import { startMtlsListener, type MtlsListener } from "./http/mtls.ts";
import { createLogger, type Logger } from "./log.ts";
import { VERSION } from "./version.ts";

export interface RunningServer {
  url: string;
  port: number;
  /** The mutual-TLS listener (`--mtls-listen`). */
  mtlsUrl: string;
  mtlsPort: number;
  services: Services;
  /** The composed app and RPC registry, for introspection (docs, access-control tests). */
  app: App;
  registry: Registry;
  stop(reason?: string): Promise<void>;
}

/** A listener that cannot be bound: the start is refused before anything is created. */
export class ListenError extends Error {}

function hostPort(listen: { hostname: string; port: number }): string {
  return `${listen.hostname.includes(":") ? `[${listen.hostname}]` : listen.hostname}:${listen.port}`;
}

/**
 * Binds each listener's address once and lets go of it, so that a port taken by another program
 * stops the start before the database or the admin account exists. (The real bind follows at
 * once; should it still fail, the start cleans up after itself.)
 */
function checkListeners(listeners: { name: string; listen: { hostname: string; port: number } }[]): void {
  for (const { name, listen } of listeners) {
    if (listen.port === 0) continue;
    try {
      const probe = Bun.listen({ hostname: listen.hostname, port: listen.port, socket: { data() {} } });
      probe.stop(true);
    } catch (error) {
      throw new ListenError(`cannot listen on ${hostPort(listen)} (${name}): ${describeListenError(error)}`);
    }
  }
}

function describeListenError(error: unknown): string {
  const code = (error as { code?: string }).code ?? "";
  if (code === "EADDRINUSE" || /in use/i.test(String(error)))
    return "the address is in use by another program; stop it or choose another --listen";
  if (code === "EACCES") return "permission denied (ports below 1024 need privileges); choose a port above 1023";
  if (code === "EADDRNOTAVAIL") return "this machine has no such address; use 0.0.0.0 or one of its addresses";
  return `${(error as Error)?.message ?? String(error)}`;
}

/**
 * What this start created in the data directory, so that a start that fails leaves nothing
 * behind: the database files, and the directory itself when it did not exist.
 */
function startupFootprint(dataDir: string): () => void {
  const dirExisted = existsSync(dataDir);
  const dbExisted = existsSync(join(dataDir, DATABASE_FILE));
  return () => {
    if (dbExisted) return;
    for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(join(dataDir, DATABASE_FILE + suffix), { force: true });
    if (!dirExisted && existsSync(dataDir) && readdirSync(dataDir).length === 0) rmSync(dataDir, { recursive: true, force: true });
  };
}

/** Audit actions that are security events worth a line in the server log even when they succeed. */
/** The broadcast topic of licensing throttles heard between nodes (not a panel topic). */
const THROTTLE_NEWS = "throttles.crossed";

const LOGGED_SUCCESSES = new Set([
  "client.register",
  "client.delete",
  "key.revoke",
  "key.reset",
  "key.delete",
  "user.create",
  "user.delete",
  "user.passwd",
  "user.update",
  "user.import",
]);

/**
 * Security events go to the server log as one line each (the audit log keeps them all), so that
 * an operator following journald sees them: failed, refused and throttled attempts, and the
 * successes above. Past `PER_WINDOW` lines of the same kind from one address in 10 s (a flood of
 * throttled guesses), the rest are counted and the count is logged with the next such line.
 */
function securityLog(log: Logger, clock: Clock): (entry: AuditEntry) => void {
  const WINDOW_MS = 10_000;
  const PER_WINDOW = 10;
  const recent = new Map<string, { start: number; logged: number; suppressed: number }>();
  return (entry) => {
    const failed = entry.outcome !== "success";
    if (!failed && !LOGGED_SUCCESSES.has(entry.action)) return;
    if (entry.action === "client.register" && !failed && entry.reason?.endsWith("(reconnect)")) return;
    const fields: Record<string, unknown> = {
      action: entry.action,
      outcome: entry.outcome,
      actor: entry.actor,
      target: entry.target ?? null,
      address: entry.address,
      reason: entry.reason ?? null,
    };
    if (!failed) {
      log.info("security event", fields);
      return;
    }
    const key = `${entry.action}\n${entry.outcome}\n${entry.reason ?? ""}\n${entry.address ?? ""}`;
    const now = clock();
    let window = recent.get(key);
    if (!window || now - window.start >= WINDOW_MS) {
      if (recent.size >= 10_000) recent.clear();
      const suppressed = window?.suppressed ?? 0;
      recent.set(key, (window = { start: now, logged: 0, suppressed: 0 }));
      if (suppressed > 0) fields.not_logged_before = suppressed;
    }
    if (window.logged >= PER_WINDOW) {
      window.suppressed++;
      return;
    }
    window.logged++;
    log.warn("security event", fields);
  };
}

export async function startServer(
  config: Config,
  options: { log?: Logger; clock?: Clock; adminPassword?: string | undefined } = {},
): Promise<RunningServer> {
  const log = options.log ?? createLogger(config.logFormat);
  checkListeners([
    { name: "--listen", listen: config.listen },
    { name: "--mtls-listen", listen: config.mtlsListen },
  ]);
  const undo = config.databaseUrl === undefined ? startupFootprint(config.dataDir) : () => undefined;
  let storage: Storage | undefined;
  try {
    storage =
      config.databaseUrl === undefined
        ? openSqliteStorage(config.dataDir, { create: true })
        : await openPostgresStorage(config.databaseUrl);
    return await run(storage, config, log, options);
  } catch (error) {
    await storage?.close().catch(() => undefined);
    undo();
    if (error instanceof AppError || error instanceof ListenError) throw error;
    // Bun reports a failed bind with its own words; say what to do.
    if (/EADDRINUSE|in use|EACCES|EADDRNOTAVAIL/i.test(String((error as { code?: string }).code ?? error))) {
      throw new ListenError(`cannot listen on ${hostPort(config.listen)} (--listen): ${describeListenError(error)}`);
    }
    throw error;
  }
}

/** The main listener; a second server on a taken port must fail, not share it; errors never show stack pages. */
function listenMain(app: ReturnType<typeof createApp>["app"], config: Config): void {
  app.listen({
    hostname: config.listen.hostname,
    port: config.listen.port,
    maxRequestBodySize: config.maxBodyBytes,
    reusePort: false,
    development: false,
    ...(config.tls ? { tls: { cert: readFileSync(config.tls.cert, "utf8"), key: readFileSync(config.tls.key, "utf8") } } : {}),
  });
}

async function run(
  storage: Storage,
  config: Config,
  log: Logger,
  options: { clock?: Clock; adminPassword?: string | undefined },
): Promise<RunningServer> {
  const services = await createServices(storage, {
    ...serviceOptions(config),
    ...(options.clock ? { clock: options.clock } : {}),
    onBackgroundError: (error) => log.error("a background write failed; retrying with the next", { error: String(error) }),
  });
  services.audit.onRecord(securityLog(log, services.clock));
  const boot = await services.accounts.bootstrap(options.adminPassword);
  // The root CA, made on the first start (SPEC §1); the mTLS listener's certificate comes from it.
  await services.ca.ensureRoot();
  if (config.requireAuthKey !== undefined) {
    await services.enrollment.updateSettings({ name: "system", address: null }, { require_auth_key: config.requireAuthKey });
  }

  const tls = config.tls !== undefined;
  let mtlsPort: number | null = null;
  const { app, connections, registry } = createApp(services, log, {
    tls,
    mtlsPort: () => mtlsPort,
    maxFrameBytes: config.maxFrameBytes,
    trustedProxies: config.trustedProxies.length > 0 ? new TrustedProxies(config.trustedProxies) : null,
    connections: {
      idleSeconds: config.wsIdleSeconds,
      authTimeoutSeconds: config.wsAuthTimeoutSeconds,
      unidentifiedPerAddress: config.wsUnauthenticatedPerAddress,
      maxConnections: config.maxConnections,
      maxSendBuffer: config.wsSendBufferBytes,
    },
  });
  // The lease on the clients this node will hold, taken before any can register.
  let leaseLost = () => {};
  await services.lease.start(
    () => leaseLost(),
    (error) => log.error("renewing this node's lease failed; retrying", { error: String(error) }),
  );
  try {
    listenMain(app, config);
  } catch (error) {
    await services.lease.stop().catch(() => undefined);
    throw error;
  }
  const server = app.server!;
  let mtls: MtlsListener;
  try {
    mtls = await startMtlsListener(services, log, connections, {
      hostname: config.mtlsListen.hostname,
      port: config.mtlsListen.port,
      sans: config.sans,
      // Half the connection budget: a piped connection holds two files (the client's and the inner one).
      maxConnections: Math.max(16, Math.floor(config.maxConnections / 2)),
      // A woodstock client reports every 60 s and may keep its connection for the next one.
      idleSeconds: 75,
      maxFrameBytes: config.maxFrameBytes,
    });
  } catch (error) {
    await server.stop(true);
    await services.lease.stop().catch(() => undefined);
    throw new ListenError(`cannot listen on ${hostPort(config.mtlsListen)} (--mtls-listen): ${describeListenError(error)}`);
  }
  mtlsPort = mtls.port;

  // Only now, listening, is the start good: the one-time password is shown after this point.
  if (boot.generatedPassword !== undefined) {
    // Shown once, in the log only: it is not stored anywhere in clear. A log collector reading
    // JSON lines must get it as one of them, or it would drop or mangle the one copy there is.
    const change = `latchkey user passwd admin --data-dir ${config.dataDir}`;
    if (config.logFormat === "json") {
      log.warn("created the bootstrap account admin with a generated password; sign in at the panel and change it", {
        username: "admin",
        password: boot.generatedPassword,
        change_with: change,
      });
    } else {
      process.stderr.write(
        `\n  latchkey: created the bootstrap account "admin" with password: ${boot.generatedPassword}\n` +
          `  Sign in at the panel and change it (Users page), or: ${change}\n\n`,
      );
    }
  } else if (boot.created) {
    log.info("created the bootstrap account admin from LATCHKEY_ADMIN_PASSWORD");
  } else if (boot.changed) {
    log.warn("LATCHKEY_ADMIN_PASSWORD changed: it is admin's password from now on, and admin's sessions have ended");
  }

  leaseLost = () => connections.dropClients("this node lost its lease on the database; reconnect");
  // Panel live updates reach the panels connected to the other nodes too.
  services.events.on(
    "push",
    (event) => void storage.broadcast(event).catch((error: unknown) => log.warn("broadcasting an event failed", { error: String(error) })),
  );
  // A licensing throttle past its free failures is held on every node.
  services.events.on(
    "throttles.crossed",
    (news) =>
      void storage
        .broadcast({ topic: THROTTLE_NEWS, args: { ...news } })
        .catch((error: unknown) => log.warn("broadcasting a throttle failed", { error: String(error) })),
  );
  storage.onBroadcast((event) => {
    if (event.topic === THROTTLE_NEWS) services.licensing.heardThrottle(event.args as unknown as ThrottleNews);
    else void connections.push(event.topic, event.args, event.groups).catch(() => undefined);
  });
  connections.start();
  services.licensing.start((error) => log.error("writing the check counters failed; retrying", { error: String(error) }));
  services.stats.start((error) => log.error("writing the charts' roll-ups failed; retrying", { error: String(error) }));
  const sweep = setInterval(() => {
    void services.sessions.sweep().catch((error: unknown) => log.error("session sweep failed", { error: String(error) }));
    void services.auth.sweepShared().catch((error: unknown) => log.error("throttle and exchange sweep failed", { error: String(error) }));
    // The CRL is rebuilt on every revocation; this keeps it from running out when nothing is revoked.
    void services.ca.refreshCrlIfDue().catch((error) => log.error("CRL refresh failed", { error: String(error) }));
  }, 60_000);
  sweep.unref?.();
  const url = `${tls ? "https" : "http"}://${hostPort({ hostname: config.listen.hostname, port: server.port! })}`;
  log.info("latchkey listening", {
    version: VERSION,
    url,
    mtls: mtls.url,
    ca_fingerprint: await services.ca.caFingerprint(),
    data_dir: config.dataDir,
    max_connections: config.maxConnections,
    ...(config.trustedProxies.length > 0 ? { trusted_proxies: config.trustedProxies.join(",") } : {}),
  });

  let stopping: Promise<void> | undefined;
  const stop = (reason = "server shutting down") =>
    (stopping ??= (async () => {
      log.info("shutting down", { reason });
      clearInterval(sweep);
      connections.stop(reason);
      mtls.stop();
      await server.stop(false);
      await services.hosts.flushReports();
      await services.licensing.stop();
      // Last: the check counters hand their counts over as they stop.
      await services.stats.stop();
      await services.clientCertificates.settled();
      await services.lease.stop().catch((error: unknown) => log.warn("giving up this node's lease failed", { error: String(error) }));
      await storage.close();
      log.info("stopped");
    })());
  return { url, port: server.port!, mtlsUrl: mtls.url, mtlsPort: mtls.port, services, app, registry, stop };
}
