/**
 * The mutual-TLS listener (`--mtls-listen`, SPEC §5): woodstock host reports,
 * `POST /api/hosts/{hostname}/client`, from clients that present a certificate of latchkey's CA,
 * and the public root and CRL (`/api/ca.pem`, `/api/crl`) for clients that have none yet.
 *
 * TLS ends at the front (mtls-front.ts), which reads each connection's certificate from its own
 * handshake; a header never stands in for it. Each certificate is verified once (cached by its
 * DER's SHA-256) and checked for revocation in the database on every new connection; a revocation,
 * here or by the CLI in another process, closes the live connections of that certificate within a
 * second.
 */
import { Elysia } from "elysia";
import * as v from "valibot";
import { isIP } from "node:net";
import { AppError, badRequest, forbidden, reportError, unauthorized, type ErrorReport } from "../core/errors.ts";
import { hostname as hostnameField, shortText } from "../core/fields.ts";
import { identifyCertificate, type CertificateIdentity } from "../core/ca/identity.ts";
import type { HostReport } from "../core/hosts.ts";
import type { Services } from "../core/services.ts";
import { describeIssue, issueField } from "../core/validation.ts";
import type { Logger } from "../log.ts";
import type { Connections } from "../rpc/connections.ts";
import { errorBody, errorHeaders, errorPlugin } from "./errors.ts";
import { socketEvents } from "./ws.ts";
import { MtlsFront, type FastPath, type Peer } from "./mtls-front.ts";
import { securityHeaders } from "./security.ts";

const address = v.pipe(
  v.string("must be a string"),
  v.maxLength(64, "must be at most 64 characters"),
  v.check((a) => isIP(a.split("/")[0]!) !== 0 && /^[^/]+(\/\d{1,3})?$/.test(a), "must be an IP address, optionally with /prefix"),
);

/** The woodstock report: `{interfaces: [{name, addresses}], port, version}`. */
const reportSchema = v.strictObject({
  interfaces: v.pipe(
    v.array(
      v.strictObject({
        name: v.pipe(shortText(64), v.nonEmpty("is required")),
        addresses: v.pipe(v.array(address, "must be a list of addresses"), v.maxLength(64, "at most 64 addresses")),
      }),
      "must be a list of {name, addresses}",
    ),
    v.maxLength(256, "at most 256 interfaces"),
  ),
  port: v.pipe(
    v.number("must be a number"),
    v.integer("must be a whole number"),
    v.minValue(0, "must be 0-65535"),
    v.maxValue(65535, "must be 0-65535"),
  ),
  version: shortText(64),
});

const MAX_REPORT_BYTES = 64 * 1024;

export interface MtlsOptions {
  hostname: string;
  port: number;
  /** Extra names for the listener's certificate (`--san`). */
  sans: string[];
  /** Connections at most (each holds a file; see MtlsFrontOptions). */
  maxConnections: number;
  /** Silent connections on the fast path, and unfinished handshakes, close after this long. */
  idleSeconds: number;
  /** The largest WebSocket frame (`--max-frame`). */
  maxFrameBytes: number;
}

/** How long a WebSocket told that its certificate was revoked has before its TLS connection is cut. */
const REVOKED_CLOSE_GRACE_MS = 200;

export interface MtlsListener {
  /** The port it listens on (the one asked for, or the one given for 0). */
  port: number;
  url: string;
  stop(): void;
}

/** An answer of the mTLS listener: a status and a JSON body (with Retry-After and such, when an error has them). */
interface Answer {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

/**
 * `POST /api/hosts/{hostname}/client`, whichever way it came (the front's fast path or the inner
 * server): who is calling (a verified, unexpired, unrevoked certificate naming a registered host:
 * else 401), for which host (the path's, which must be the certificate's: else 403; a malformed
 * one is 400), and what it reports (else 400 naming the field).
 */
function hostReport(services: Services, log: Logger) {
  const fail = (error: unknown, result: string): Answer => {
    const report: ErrorReport = reportError(error, (unexpected) =>
      log.error("unhandled mTLS error", { error: String((unexpected as Error)?.stack ?? unexpected) }),
    );
    services.metrics.hostReport(result);
    return { status: report.status, body: errorBody(report), headers: errorHeaders(report) };
  };
  return async (pathHostname: string, text: string, peer: Peer<Promise<CertificateIdentity>> | undefined): Promise<Answer> => {
    let host: string;
    try {
      host = await certifiedHost(services, peer);
    } catch (error) {
      return fail(error, error instanceof AppError ? (error.reason ?? "unauthorized") : "error");
    }
    const name = v.safeParse(hostnameField, pathHostname);
    if (!name.success) return fail(badRequest(`hostname ${name.issues[0].message}`, "hostname"), "bad_request");
    if (name.output.toLowerCase() !== host) {
      return fail(forbidden(`this certificate is for ${host}, not ${name.output.toLowerCase()}`), "forbidden");
    }
    if (text.length > MAX_REPORT_BYTES)
      return fail(badRequest(`the report is larger than ${MAX_REPORT_BYTES} bytes`, "body"), "bad_request");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return fail(badRequest("the body is not valid JSON: send {interfaces, port, version}", "body"), "bad_request");
    }
    const report = v.safeParse(reportSchema, json);
    if (!report.success) {
      const field = issueField(report.issues[0]) || "body";
      return fail(badRequest(describeIssue(report.issues[0], field), field), "bad_request");
    }
    try {
      await services.hosts.recordReport(host, report.output as HostReport, peer?.address ?? null);
    } catch (error) {
      return fail(error, error instanceof AppError ? error.code : "error");
    }
    services.metrics.hostReport("ok");
    return { status: 200, body: { ok: true, hostname: host }, headers: {} };
  };
}

/** The report route's path, as the fast path reads it (anything encoded goes to the inner server). */
const REPORT_PATH = /^\/api\/hosts\/([A-Za-z0-9.-]{1,253})\/client$/;

/** The inner app: the routes of the mTLS listener, behind a front that tells each request's peer. */
function innerApp(
  services: Services,
  log: Logger,
  report: ReturnType<typeof hostReport>,
  front: () => MtlsFront<Promise<CertificateIdentity>>,
  connections: Connections,
  maxFrameBytes: number,
) {
  const headers = securityHeaders({ tls: true });
  const events = socketEvents(connections);
  /** What each upgrade's connection presented, from `beforeHandle` to `open`. */
  const upgrades = new WeakMap<Request, { address: string | null; certificate: CertificateIdentity }>();
  return (
    new Elysia({
      name: "latchkey/http/mtls",
      websocket: {
        maxPayloadLength: maxFrameBytes,
        idleTimeout: 0,
        sendPings: true,
        perMessageDeflate: false,
        closeOnBackpressureLimit: false,
      },
    })
      .use(errorPlugin(log))
      .onRequest(({ set }) => void Object.assign(set.headers, headers))
      .get("/api/ca.pem", async () => new Response(await services.ca.caPem(), { headers: { "content-type": "application/x-pem-file" } }))
      .get("/api/crl", async ({ query }) => {
        const crl = await services.ca.crl();
        return query.format === "pem"
          ? new Response(crl.pem, { headers: { "content-type": "application/x-pem-file" } })
          : new Response(new Uint8Array(crl.der), { headers: { "content-type": "application/pkix-crl" } });
      })
      // The RPC WebSocket over mutual TLS: the connection's certificate identifies an enrolled client
      // (SPEC §4); without a valid one only client/register and client/csr are open (see Connections).
      .ws("/ws", {
        async beforeHandle({ request, server }) {
          const peer = front().peerOf(server?.requestIP(request)?.port ?? -1);
          const certificate: CertificateIdentity = peer ? await peer.identity : { kind: "none" };
          const address = peer?.address ?? null;
          const refusal = connections.refusal(address, certificate.kind === "valid");
          if (refusal) throw new AppError(refusal.status === 503 ? "unavailable" : "throttled", refusal.message, { retryAfter: 5 });
          upgrades.set(request, { address, certificate });
        },
        open(ws) {
          const upgrade = upgrades.get(ws.data.request)!;
          events.open(ws.raw, upgrade.address, null, { listener: "mtls", certificate: upgrade.certificate });
        },
        drain(ws) {
          events.drain(ws.raw);
        },
        close(ws) {
          events.close(ws.raw);
        },
      })
      .post(
        "/api/hosts/:hostname/client",
        async ({ request, server, params, set }) => {
          const answer = await report(params.hostname, await request.text(), front().peerOf(server?.requestIP(request)?.port ?? -1));
          set.status = answer.status;
          Object.assign(set.headers, answer.headers);
          return answer.body;
        },
        { parse: "none" },
      )
  );
}

/** The registered host a connection's certificate stands for; 401 (with a reason) otherwise. */
async function certifiedHost(services: Services, peer: Peer<Promise<CertificateIdentity>> | undefined): Promise<string> {
  const refuse = (reason: string, message: string): never => {
    throw new AppError("unauthorized", message, { reason });
  };
  if (!peer) return refuse("no_tls", "connect over TLS with your client certificate");
  const identity = await peer.identity;
  if (identity.kind === "none") return refuse("no_certificate", "a client certificate issued by this server's CA is required");
  if (identity.kind === "invalid")
    return refuse(identity.reason, `the client certificate was refused (${identity.reason.replaceAll("_", " ")})`);
  if (identity.notAfter <= services.clock()) return refuse("expired", "the client certificate has expired");
  const host = identity.commonName?.toLowerCase() ?? "";
  if (host === "" || !(await services.hosts.isRegistered(host))) {
    return refuse("unknown_host", `the certificate's CN ${JSON.stringify(identity.commonName ?? "")} is not a registered host`);
  }
  return host;
}

/**
 * Starts the listener: its certificate from the CA, the inner app on loopback, the TLS front. A new
 * root (`latchkey ca import`, here or in another process) gives the listener a new certificate: the
 * front starts again on the same port with it.
 */
export async function startMtlsListener(
  services: Services,
  log: Logger,
  connections: Connections,
  options: MtlsOptions,
): Promise<MtlsListener> {
  let front: MtlsFront<Promise<CertificateIdentity>> | undefined;
  const report = hostReport(services, log);
  const app = innerApp(services, log, report, () => front!, connections, options.maxFrameBytes);
  const decoder = new TextDecoder();
  const fast: FastPath<Promise<CertificateIdentity>> = {
    accepts: (method, path) => method === "POST" && REPORT_PATH.test(path),
    maxBody: MAX_REPORT_BYTES,
    headers: securityHeaders({ tls: true }),
    async handle(request, peer) {
      const answer = await report(REPORT_PATH.exec(request.path)![1]!, decoder.decode(request.body), peer);
      return { status: answer.status, body: JSON.stringify(answer.body), headers: answer.headers };
    },
  };
  app.listen({ hostname: "127.0.0.1", port: 0, reusePort: false, development: false, maxRequestBodySize: 1024 * 1024 });
  let root = await services.ca.caFingerprint();
  const startFront = async (port: number) => {
    const server = await services.ca.serverCertificate({ sans: options.sans });
    const next = new MtlsFront<Promise<CertificateIdentity>>({
      hostname: options.hostname,
      port,
      cert: server.certificate,
      key: server.key,
      ca: server.ca,
      innerPort: app.server!.port!,
      identify: (der) => identifyCertificate(services, der),
      fast,
      maxConnections: options.maxConnections,
      idleSeconds: options.idleSeconds,
    });
    next.start();
    return next;
  };
  try {
    front = await startFront(options.port);
  } catch (error) {
    await app.stop(true);
    throw error;
  }
  const port = front.port;

  // A revocation closes the live connections of that certificate: at once when made here, within
  // a second when made by another process (the CLI, another node), which the storage's watch on
  // other writers tells this one about.
  // A WebSocket among them is told why first (4003, by Connections): its TLS connection is cut a
  // moment later, once that close frame has gone through the pipe.
  const closeRevoked = async (serials?: ReadonlySet<string>) => {
    const valid: [Peer<Promise<CertificateIdentity>>, Extract<CertificateIdentity, { kind: "valid" }>][] = [];
    for (const peer of front!.peers()) {
      // An identity that could not be made (the database was unreachable at the handshake) admits nothing.
      const identity = await peer.identity.catch(() => null);
      if (identity?.kind === "valid") valid.push([peer, identity]);
    }
    // Without the serials (another process revoked), the database says which: one query for all.
    const revokedFingerprints = serials ? null : await services.ca.revokedAmong([...new Set(valid.map(([, i]) => i.fingerprint))]);
    const doomed = new Set<Peer<Promise<CertificateIdentity>>>();
    const revokedSerials = new Set<string>();
    for (const [peer, identity] of valid) {
      const revoked = serials ? serials.has(identity.serial) : revokedFingerprints!.has(identity.fingerprint);
      if (!revoked) continue;
      doomed.add(peer);
      revokedSerials.add(identity.serial);
    }
    if (doomed.size === 0) return;
    connections.closeCertified(revokedSerials, "client certificate revoked");
    const cut = setTimeout(() => front!.closeWhere((p) => doomed.has(p)), REVOKED_CLOSE_GRACE_MS);
    cut.unref?.();
  };
  const rootChanged = async () => {
    const now = await services.ca.caFingerprint();
    if (now === root) return;
    root = now;
    log.info("the root CA changed: the mTLS listener takes a certificate from the new root", { ca_fingerprint: now });
    front!.stop();
    front = await startFront(port);
  };
  const off = services.events.on(
    "certificates.revoked",
    ({ serials }) =>
      void closeRevoked(new Set(serials)).catch((error) => log.error("closing revoked mTLS connections failed", { error: String(error) })),
  );
  const otherWriters = services.storage.watchOtherWriters();
  // One refresh at a time, each after the one before: a slow one (a new front) never overlaps the next.
  let refreshing: Promise<void> = Promise.resolve();
  const watch = setInterval(() => {
    if (!otherWriters()) return;
    refreshing = refreshing
      .then(() => rootChanged())
      .then(() => closeRevoked())
      .catch((error) => log.error("mTLS listener refresh failed", { error: String(error) }));
  }, 500);
  watch.unref?.();

  services.metrics.gauge("latchkey_mtls_connections", () => front!.size);
  const host = options.hostname.includes(":") ? `[${options.hostname}]` : options.hostname;
  return {
    port,
    url: `https://${host}:${port}`,
    stop() {
      clearInterval(watch);
      off();
      front!.stop();
      void app.stop(true);
    },
  };
}
