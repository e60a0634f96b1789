/**
 * `latchkey server`: opens the data directory, bootstraps on first start, listens, and shuts
 * down gracefully on SIGTERM/SIGINT (stop accepting, finish in-flight requests, close
 * WebSockets with a reason, checkpoint the database).
 */
import { readFileSync } from "node:fs";
import { createApp, type App } from "./app.ts";
import type { Registry } from "./rpc/registry.ts";
import { serviceOptions, type Config } from "./config.ts";
import type { Clock } from "./core/clock.ts";
import { createServices, type Services } from "./core/services.ts";
import { openDatabase } from "./db/open.ts";
import { createLogger, type Logger } from "./log.ts";
import { VERSION } from "./version.ts";

export interface RunningServer {
  url: string;
  port: number;
  services: Services;
  /** The composed app and RPC registry, for introspection (docs, access-control tests). */
  app: App;
  registry: Registry;
  stop(reason?: string): Promise<void>;
}

export async function startServer(
  config: Config,
  options: { log?: Logger; clock?: Clock; adminPassword?: string | undefined } = {},
): Promise<RunningServer> {
  const log = options.log ?? createLogger(config.logFormat);
  const db = openDatabase(config.dataDir, { create: true });
  const services = createServices(db, { ...serviceOptions(config), ...(options.clock ? { clock: options.clock } : {}) });
  const boot = await services.accounts.bootstrap(options.adminPassword);
  if (boot.generatedPassword !== undefined) {
    // Printed once, on the console only: it is not stored anywhere in clear.
    process.stderr.write(
      `\n  latchkey: created the bootstrap account "admin" with password: ${boot.generatedPassword}\n` +
        `  Sign in at the panel and change it (Users page), or: latchkey user passwd admin --data-dir ${config.dataDir}\n\n`,
    );
  } else if (boot.created) {
    log.info("created the bootstrap account admin from LATCHKEY_ADMIN_PASSWORD");
  }
  if (config.requireAuthKey !== undefined) {
    services.enrollment.updateSettings({ name: "system", address: null }, { require_auth_key: config.requireAuthKey });
  }

  const tls = config.tls !== undefined;
  const { app, connections, registry } = createApp(services, log, {
    tls,
    wsIdleSeconds: config.wsIdleSeconds,
    maxFrameBytes: config.maxFrameBytes,
  });
  app.listen({
    hostname: config.listen.hostname,
    port: config.listen.port,
    maxRequestBodySize: config.maxBodyBytes,
    // A second server on a taken port must fail, not share it; errors never show stack pages.
    reusePort: false,
    development: false,
    ...(config.tls ? { tls: { cert: readFileSync(config.tls.cert, "utf8"), key: readFileSync(config.tls.key, "utf8") } } : {}),
  });
  const server = app.server!;
  connections.start();
  services.licensing.start();
  const sweep = setInterval(() => services.sessions.sweep(), 60_000);
  sweep.unref?.();
  const url = `${tls ? "https" : "http"}://${config.listen.hostname.includes(":") ? `[${config.listen.hostname}]` : config.listen.hostname}:${server.port}`;
  log.info("latchkey listening", { version: VERSION, url, data_dir: config.dataDir });

  let stopping: Promise<void> | undefined;
  const stop = (reason = "server shutting down") =>
    (stopping ??= (async () => {
      log.info("shutting down", { reason });
      clearInterval(sweep);
      connections.stop(reason);
      await server.stop(false);
      services.licensing.stop();
      db.run("PRAGMA wal_checkpoint(TRUNCATE)");
      db.close();
      log.info("stopped");
    })());
  return { url, port: server.port!, services, app, registry, stop };
}
