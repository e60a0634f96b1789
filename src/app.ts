/**
 * createApp builds the whole HTTP + WebSocket surface from its dependencies; it never listens
 * (only main.ts does). Every route plugin is registered here, top to bottom.
 */
import { Elysia, type AnyElysia } from "elysia";
import type { Services } from "./core/services.ts";
import type { Logger } from "./log.ts";
import { auditRoutes } from "./http/audit.ts";
import { caRoutes } from "./http/ca.ts";
import { hostRoutes } from "./http/hosts.ts";
import { licenseRoutes } from "./http/licenses.ts";
import { enrollmentRoutes } from "./http/enrollment.ts";
import { licensingApiRoutes } from "./http/licensing-api.ts";
import { CHECK_PATH, checkRoute } from "./http/check-route.ts";
import { authRoutes } from "./http/auth.ts";
import { docsRoutes } from "./http/docs.ts";
import { errorPlugin } from "./http/errors.ts";
import { opsRoutes } from "./http/ops.ts";
import { panelRoutes } from "./http/panel.ts";
import { rpcMirrorRoutes } from "./http/rpc-mirror.ts";
import { securityPlugin } from "./http/security.ts";
import { statsRoutes } from "./http/stats.ts";
import { assertAccessDeclared, declarationOf, sessionPlugin } from "./http/session.ts";
import { userRoutes } from "./http/users.ts";
import { userCertificateRoutes } from "./http/user-certificates.ts";
import { wsRoute } from "./http/ws.ts";
import { Connections, type ConnectionLimits } from "./rpc/connections.ts";
import type { TrustedProxies } from "./http/client-address.ts";
import { createRegistry } from "./rpc/handlers/index.ts";

export interface AppOptions {
  /** The main listener speaks TLS: cookies get `__Host-` and Secure, responses HSTS. */
  tls: boolean;
  maxFrameBytes: number;
  connections: ConnectionLimits;
  /** Proxies allowed to name the client's address (null: none, the peer is the client). */
  trustedProxies: TrustedProxies | null;
  /** The mTLS listener's port once it listens (install commands name it). */
  mtlsPort?: () => number | null;
}

export function createApp(services: Services, log: Logger, options: AppOptions) {
  const registry = createRegistry();
  const connections = new Connections(services, registry, log, options.connections);
  const session = sessionPlugin(services, options);
  const app = new Elysia({
    name: "latchkey",
    // Frames over the limit close the socket with 1009; our own sweep handles idleness. Unread
    // replies are bounded by Connections (which says why it disconnects), well before Bun's own
    // limit, past which Bun would drop them silently.
    websocket: {
      maxPayloadLength: options.maxFrameBytes,
      idleTimeout: 0,
      sendPings: true,
      perMessageDeflate: false,
      backpressureLimit: options.connections.maxSendBuffer + 2 * options.maxFrameBytes + 64 * 1024 * 1024,
      closeOnBackpressureLimit: false,
    },
    // Handed to Bun.serve with Elysia's own routes, and taking precedence over them.
    serve: { routes: { [CHECK_PATH]: { GET: checkRoute(services, log, options) } } },
  })
    .use(errorPlugin(log))
    .use(securityPlugin(services.metrics, options))
    .use(session)
    .use(opsRoutes(services, session))
    .use(docsRoutes(session, (): AnyElysia => app))
    .use(panelRoutes(session))
    .use(authRoutes(services, session, options))
    .use(userRoutes(services, session))
    .use(userCertificateRoutes(services, session))
    .use(auditRoutes(services, session))
    .use(licensingApiRoutes(services, session))
    .use(licenseRoutes(services, session))
    .use(statsRoutes(services, session))
    .use(enrollmentRoutes(services, session, { ...(options.mtlsPort ? { mtlsPort: options.mtlsPort } : {}) }))
    .use(hostRoutes(services, session))
    .use(caRoutes(services, session))
    .use(wsRoute(connections, session))
    .use(rpcMirrorRoutes(services, session, registry));
  // Deny by default, checked before anything listens: every route says who may call it.
  assertAccessDeclared(app.routes);
  // Bun's router serves /api/check without a session, so its documented route must say public.
  const check = app.routes.find((route) => route.method === "GET" && route.path === CHECK_PATH);
  if (!check || declarationOf(check) !== "public")
    throw new Error(`${CHECK_PATH} is served without a session, so its route must declare public: true`);
  return { app, registry, connections };
}

export type App = ReturnType<typeof createApp>["app"];
