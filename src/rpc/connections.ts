/**
 * Live WebSocket connections: each carries at most one session; messages are dispatched
 * through the registry; sessions that are ended (logout, user deleted, password or role changed —
 * here or by the CLI in another process) close their sockets, while a session that runs out
 * (idle or absolute limit) leaves its socket open and unauthenticated; silent sockets are closed
 * after the idle limit. Sockets that neither sign in nor register in time are closed, such sockets
 * are capped per address, all sockets are capped below the open-file limit, and a peer that does
 * not read its replies is disconnected.
 */
import * as v from "valibot";
import { stillValid, type CertificateIdentity } from "../core/ca/identity.ts";
import { AppError, reportError, unauthorized } from "../core/errors.ts";
import { describeIssue, issueField } from "../core/validation.ts";
import type { Principal } from "../core/sessions.ts";
import type { Binding } from "../core/enrollment/index.ts";
import type { Services } from "../core/services.ts";
import type { GaugeSample } from "../core/stats.ts";
import type { Logger } from "../log.ts";
import {
  CLOSE_AUTH_TIMEOUT,
  CLOSE_CLIENT_REVOKED,
  CLOSE_IDLE,
  CLOSE_SESSION_ENDED,
  CLOSE_TRY_AGAIN_LATER,
  errorEnvelope,
  isRefusalReason,
  REFUSAL_MESSAGES,
  requestEnvelope,
  response,
  type ErrorEnvelope,
  type EventEnvelope,
  type RequestId,
} from "./protocol.ts";
import type { Registry } from "./registry.ts";

/** The part of a WebSocket this module needs (Bun's ServerWebSocket fits). */
export interface Socket {
  /** Bytes sent, -1 when queued under backpressure, 0 when dropped (Bun's ServerWebSocket). */
  send(data: string): number;
  close(code?: number, reason?: string): void;
  /** Bytes queued and not yet taken by the peer. */
  getBufferedAmount(): number;
}

export interface Connection {
  /** Unique in this process, across both listeners. */
  id: number;
  socket: Socket;
  address: string | null;
  sessionId: string | null;
  principal: Principal | null;
  /** Set once the connection registered as an enrolled client. */
  clientUuid: string | null;
  /** The enrollment key that client was admitted with (null when none was required). */
  clientKeyId: number | null;
  /** That client's group: the charts count who is online per group. */
  clientGroup: string | null;
  /** The registration's claim on the client's presence, released when this socket lets go of it. */
  clientClaim: string | null;
  lastMessageAt: number;
  openedAt: number;
  /** Signed in or registered at least once: no longer held to the sign-in deadline and cap. */
  identified: boolean;
  closed: boolean;
  /** When its unread replies passed the limit: nothing more is sent, and it closes once drained. */
  overflowedAt: number | null;
  /** The listener it came through: the main one, or the mutual-TLS one. */
  listener: Listener;
  /** On the mTLS listener: what the certificate of its TLS connection says (null elsewhere). */
  certificate: CertificateIdentity | null;
}

export type Listener = "main" | "mtls";

/**
 * What a connection on the mTLS listener may call without a valid client certificate: enrolling
 * (SPEC §4, pinned TLS enrollment); everything else there needs the certificate.
 */
const CERTIFICATELESS_CALLS = new Set(["client/register", "client/csr"]);

/** Connection ids, from one counter for the whole process: unique whichever listener a connection came through. */
let lastConnectionId = 0;

/** How long a peer that stopped reading has to take what it was sent before it is cut off. */
const OVERFLOW_GRACE_MS = 30_000;

export interface ConnectionLimits {
  /** Close sockets silent this long. */
  idleSeconds: number;
  /** Close sockets that have neither signed in nor registered this long after opening. */
  authTimeoutSeconds: number;
  /** Sockets not yet identified, per source address. */
  unidentifiedPerAddress: number;
  /** All sockets. */
  maxConnections: number;
  /** Bytes of replies queued for a peer before it is disconnected for not reading them. */
  maxSendBuffer: number;
}

/** Why a new socket is refused, or null when it may open. */
export interface Refusal {
  status: 429 | 503;
  message: string;
}

export class Connections {
  private readonly all = new Set<Connection>();
  private readonly bySession = new Map<string, Set<Connection>>();
  private readonly byClient = new Map<string, Connection>();
  /** Per source address, its sockets not yet identified. */
  private readonly unidentified = new Map<string, number>();
  /** Bindings waiting for their check after registration, and whether one runs (see checkBinding). */
  private bindingsToCheck: Binding[] = [];
  private checkingBindings = false;
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  /** Says whether another process or node has written since it was last asked. */
  private readonly otherWriters: () => boolean;

  constructor(
    private readonly services: Services,
    private readonly registry: Registry,
    private readonly log: Logger,
    private readonly options: ConnectionLimits,
  ) {
    this.otherWriters = services.storage.watchOtherWriters();
    services.events.on("sessions.revoked", ({ sessionIds, reason }) => this.closeSessions(sessionIds, reason));
    services.events.on(
      "push",
      (event) =>
        void this.push(event.topic, event.args, event.groups).catch((error: unknown) =>
          log.error("pushing an event failed", { topic: event.topic, error: String(error) }),
        ),
    );
    // The domain says why in a word; the client reads the refusal it will get when it reconnects.
    services.events.on("clients.kick", ({ uuids, reason, keyId }) =>
      this.kickClients(uuids, isRefusalReason(reason) ? REFUSAL_MESSAGES[reason] : reason, keyId),
    );
    services.metrics.gauge("latchkey_ws_connections", () => this.all.size);
    services.metrics.gauge("latchkey_connected_clients", () => this.byClient.size);
    services.stats.gauge("clients_online", () => this.onlineByGroup());
  }

  /** Registered clients connected now, overall and per group (the charts' `clients_online`). */
  private onlineByGroup(): GaugeSample {
    const groups = new Map<string, number>();
    for (const c of this.byClient.values()) if (c.clientGroup !== null) groups.set(c.clientGroup, (groups.get(c.clientGroup) ?? 0) + 1);
    return { total: this.byClient.size, groups };
  }

  /** Starts the idle sweep and the watch for changes made by other processes (the CLI). */
  start(): void {
    const shortest = Math.min(this.options.idleSeconds, this.options.authTimeoutSeconds);
    const sweepMs = Math.max(250, Math.min(5000, (shortest * 1000) / 5));
    const idle = setInterval(() => this.closeIdle(), sweepMs);
    const watch = setInterval(
      () =>
        void this.watchDatabase().catch((error: unknown) => this.log.error("checking for other writers failed", { error: String(error) })),
      500,
    );
    idle.unref?.();
    watch.unref?.();
    this.timers.push(idle, watch);
  }

  stop(reason: string): void {
    for (const t of this.timers) clearInterval(t);
    for (const c of this.all) this.shut(c, 1001, reason);
    this.all.clear();
    this.byClient.clear();
    this.bySession.clear();
    this.unidentified.clear();
  }

  /**
   * Whether a new socket from this address may open: refused past the total cap (503) or past
   * the cap of sockets not yet identified from one address (429). Asked before the upgrade;
   * `open` enforces the same caps exactly.
   */
  refusal(address: string | null, identified: boolean): Refusal | null {
    if (this.all.size >= this.options.maxConnections) {
      return { status: 503, message: "the server holds as many connections as it can; retry later" };
    }
    if (!identified && (this.unidentified.get(address ?? "") ?? 0) >= this.options.unidentifiedPerAddress) {
      return { status: 429, message: "too many connections from this address have not signed in or registered yet; retry later" };
    }
    return null;
  }

  /** A socket opened; null when it was closed at once for being over a cap. */
  open(
    socket: Socket,
    address: string | null,
    principal: Principal | null,
    via: { listener: Listener; certificate: CertificateIdentity | null } = { listener: "main", certificate: null },
  ): Connection | null {
    const refusal = this.refusal(address, principal !== null);
    if (refusal) {
      socket.close(CLOSE_TRY_AGAIN_LATER, refusal.message);
      return null;
    }
    const now = this.services.clock();
    const connection: Connection = {
      id: ++lastConnectionId,
      socket,
      address,
      sessionId: null,
      principal: null,
      clientUuid: null,
      clientKeyId: null,
      clientClaim: null,
      clientGroup: null,
      lastMessageAt: now,
      openedAt: now,
      identified: false,
      closed: false,
      overflowedAt: null,
      listener: via.listener,
      certificate: via.certificate,
    };
    this.all.add(connection);
    this.unidentified.set(address ?? "", (this.unidentified.get(address ?? "") ?? 0) + 1);
    if (principal) this.signIn(connection, principal);
    return connection;
  }

  private identify(connection: Connection): void {
    if (connection.identified) return;
    connection.identified = true;
    const key = connection.address ?? "";
    const left = (this.unidentified.get(key) ?? 1) - 1;
    if (left <= 0) this.unidentified.delete(key);
    else this.unidentified.set(key, left);
  }

  /** Closes a socket from our side; `close` below runs when it is gone. */
  private shut(connection: Connection, code: number, reason: string): void {
    if (connection.closed) return;
    connection.closed = true;
    connection.socket.close(code, reason);
  }

  /**
   * Sends a frame, unless the peer is not reading: once the replies it has not taken pass the
   * limit, nothing more is sent, the server log says so, and the socket is closed with a reason
   * as soon as what was sent has drained (the close frame comes after the last reply, so the
   * peer sees no gap, only the end), or after `OVERFLOW_GRACE_MS` if it never drains.
   */
  private send(connection: Connection, frame: string): void {
    if (connection.closed || connection.overflowedAt !== null) return;
    const buffered = connection.socket.getBufferedAmount();
    if ((buffered > 0 && buffered + frame.length > this.options.maxSendBuffer) || connection.socket.send(frame) === 0) {
      connection.overflowedAt = this.services.clock();
      this.log.warn("disconnecting a WebSocket that does not read its replies", { address: connection.address, buffered_bytes: buffered });
      this.closeIfDrained(connection);
    }
  }

  /** Closes an overflowed socket once its queue is empty, or when it has had long enough. */
  private closeIfDrained(connection: Connection): void {
    if (connection.overflowedAt === null) return;
    const waited = this.services.clock() - connection.overflowedAt;
    if (connection.socket.getBufferedAmount() === 0 || waited >= OVERFLOW_GRACE_MS) {
      this.shut(connection, CLOSE_TRY_AGAIN_LATER, "replies are not being read; disconnected");
    }
  }

  /** Bun says the socket can take more: an overflowed one may be ready to close. */
  drained(connection: Connection): void {
    this.closeIfDrained(connection);
  }

  close(connection: Connection): void {
    connection.closed = true;
    if (!this.all.delete(connection)) return;
    this.identify(connection);
    this.forget(connection);
    const uuid = connection.clientUuid;
    if (uuid !== null && this.byClient.get(uuid) === connection) this.detachClient(connection, null);
  }

  /**
   * Closes the mTLS sockets whose client certificate is one of these serials (revoked), saying so
   * (4003): a client registered on one is disconnected like a kicked one.
   */
  closeCertified(serials: ReadonlySet<string>, reason: string): void {
    for (const connection of this.all) {
      const certificate = connection.certificate;
      if (certificate?.kind !== "valid" || !serials.has(certificate.serial)) continue;
      const uuid = connection.clientUuid;
      if (uuid !== null && this.byClient.get(uuid) === connection) this.detachClient(connection, reason);
      this.shut(connection, CLOSE_CLIENT_REVOKED, reason);
    }
  }

  /**
   * This node could not renew its lease in time: another node may now hold its clients, so each is
   * disconnected ("try again later") and reconnects to whichever node is alive.
   */
  dropClients(reason: string): void {
    for (const connection of [...this.byClient.values()]) {
      this.detachClient(connection, reason);
      this.shut(connection, CLOSE_TRY_AGAIN_LATER, reason);
    }
  }

  /**
   * The connection no longer holds its client: the client is offline, its claim released (written
   * in the background; a failure is logged). `reason`, when given, goes to the log.
   */
  private detachClient(connection: Connection, reason: string | null): void {
    const uuid = connection.clientUuid;
    const claim = connection.clientClaim;
    if (uuid === null) return;
    if (this.byClient.get(uuid) === connection) this.byClient.delete(uuid);
    connection.clientUuid = null;
    connection.clientKeyId = null;
    connection.clientGroup = null;
    connection.clientClaim = null;
    if (reason !== null) this.log.info("client disconnected", { uuid, address: connection.address, reason });
    if (claim === null) return;
    void this.services.enrollment
      .disconnected(uuid, claim)
      .catch((error: unknown) => this.log.error("recording a client offline failed", { uuid, error: String(error) }));
  }

  /** Kicks those of these bound clients whose key is no longer theirs (still connected with that key). */
  private async kickLost(bound: Binding[]): Promise<void> {
    for (const { uuid, keyId } of await this.services.enrollment.lostBindings(bound)) {
      this.kickClients([uuid], REFUSAL_MESSAGES.invalid_key, keyId);
    }
  }

  /**
   * A client just registered with a key: a revocation committed after its registration but before
   * its connection was listed kicked nobody, so its key is checked once more. Checks are shared:
   * the bindings listed while one runs go together in the next, which begins after they were.
   */
  private checkBinding(binding: Binding): void {
    this.bindingsToCheck.push(binding);
    if (this.checkingBindings) return;
    this.checkingBindings = true;
    void (async () => {
      while (this.bindingsToCheck.length > 0) {
        await this.kickLost(this.bindingsToCheck.splice(0)).catch((error: unknown) =>
          this.log.error("checking clients' keys failed", { error: String(error) }),
        );
      }
      this.checkingBindings = false;
    })();
  }

  /** Closes these clients' sockets; with keyId, only those admitted with that key. */
  private kickClients(uuids: string[], reason: string, keyId?: number): void {
    for (const uuid of uuids) {
      const connection = this.byClient.get(uuid);
      if (!connection) continue;
      if (keyId !== undefined && connection.clientKeyId !== keyId) continue;
      this.detachClient(connection, reason);
      this.shut(connection, CLOSE_CLIENT_REVOKED, reason);
    }
  }

  private signIn(connection: Connection, principal: Principal): void {
    this.forget(connection);
    this.identify(connection);
    connection.sessionId = principal.sessionId;
    connection.principal = principal;
    let set = this.bySession.get(principal.sessionId);
    if (!set) this.bySession.set(principal.sessionId, (set = new Set()));
    set.add(connection);
  }

  private forget(connection: Connection): void {
    if (connection.sessionId === null) return;
    const set = this.bySession.get(connection.sessionId);
    set?.delete(connection);
    if (set?.size === 0) this.bySession.delete(connection.sessionId);
    connection.sessionId = null;
    connection.principal = null;
  }

  /** Handles one frame: raw text, or a value the WebSocket layer already decoded from JSON. */
  async message(connection: Connection, raw: unknown): Promise<void> {
    // A peer that stopped reading gets no more answers: its socket closes once drained.
    if (connection.overflowedAt !== null || connection.closed) return;
    connection.lastMessageAt = this.services.clock();
    let id: RequestId | null = null;
    try {
      let parsed: unknown = raw;
      if (typeof raw === "string" || Buffer.isBuffer(raw)) {
        try {
          parsed = JSON.parse(raw.toString());
        } catch {
          throw new AppError("bad_request", "the frame is not valid JSON", { field: "frame" });
        }
      }
      if (typeof parsed === "object" && parsed !== null && "id" in parsed) {
        const maybe = (parsed as { id: unknown }).id;
        if ((typeof maybe === "string" && maybe.length <= 128) || typeof maybe === "number") id = maybe;
      }
      const envelope = v.safeParse(requestEnvelope, parsed);
      if (!envelope.success) {
        const issue = envelope.issues[0];
        const field = issueField(issue) || "frame";
        const message = field === "frame" ? "the frame must be a JSON object {namespace, name, id, args}" : describeIssue(issue, field);
        throw new AppError("bad_request", message, { field });
      }
      const { namespace, name, args } = envelope.output;
      if (connection.listener === "mtls" && !stillValid(connection.certificate!, this.services.clock())) {
        if (!CERTIFICATELESS_CALLS.has(`${namespace}/${name}`)) {
          throw unauthorized("on this listener only client/register and client/csr are open without a valid client certificate");
        }
      }
      // Each message re-checks the session: it may have expired or been revoked meanwhile.
      if (connection.sessionId !== null) {
        const principal = await this.services.sessions.authenticateId(connection.sessionId);
        if (principal) connection.principal = principal;
        else this.forget(connection);
      }
      const result = await this.registry.dispatch(
        {
          services: this.services,
          principal: connection.principal,
          address: connection.address,
          transport: "ws",
          connection: {
            id: String(connection.id),
            listener: connection.listener,
            certificate: () =>
              connection.certificate && stillValid(connection.certificate, this.services.clock()) ? connection.certificate : null,
            signIn: (login) => this.signIn(connection, "userId" in login ? login : login.principal),
            signOut: () => this.forget(connection),
            clientUuid: () => connection.clientUuid,
            clientConnectedElsewhere: (uuid) => {
              const other = this.byClient.get(uuid);
              return other !== undefined && other !== connection;
            },
            registerClient: (uuid, keyId, group, claim) => {
              this.identify(connection);
              connection.clientUuid = uuid;
              connection.clientKeyId = keyId;
              connection.clientGroup = group;
              connection.clientClaim = claim;
              // The registration awaited the database: the socket may have gone meanwhile.
              if (connection.closed) {
                this.detachClient(connection, null);
                return;
              }
              this.byClient.set(uuid, connection);
              // A revocation committed after the registration but before this listing kicked nobody.
              if (keyId !== null) this.checkBinding({ uuid, keyId });
            },
          },
        },
        namespace,
        name,
        args,
      );
      this.send(connection, JSON.stringify(response(id, result)));
    } catch (error) {
      this.send(connection, JSON.stringify(errorEnvelope(id, this.errorArgs(error))));
    }
  }

  /** An error as the RPC envelope's args; a 401 says exactly "Unauthorized", as the sysadm seed does. */
  private errorArgs(error: unknown): ErrorEnvelope["args"] {
    const report = reportError(error, (unexpected) =>
      this.log.error("unhandled RPC error", { error: String((unexpected as Error)?.stack ?? unexpected) }),
    );
    const args: ErrorEnvelope["args"] = { code: report.status, message: report.status === 401 ? "Unauthorized" : report.message };
    if (report.field !== undefined) args.field = report.field;
    if (report.retryAfter !== undefined) args.retry_after = report.retryAfter;
    if (report.reason !== undefined && isRefusalReason(report.reason)) args.reason = report.reason;
    return args;
  }

  /** Sessions that were ended (not ones that ran out): their sockets close at once. */
  private closeSessions(sessionIds: string[], reason: string): void {
    this.detachSessions(sessionIds, (c) => this.shut(c, CLOSE_SESSION_ENDED, `session ended: ${reason}`));
  }

  /**
   * Sessions that ran out (idle or absolute limit): their sockets stay open, unauthenticated, so
   * that the next call gets the 401 error envelope there and may sign in again (sysadm seed).
   */
  private expireSessions(sessionIds: string[]): void {
    this.detachSessions(sessionIds, () => {});
  }

  private detachSessions(sessionIds: string[], then: (connection: Connection) => void): void {
    for (const id of sessionIds) {
      const set = this.bySession.get(id);
      if (!set) continue;
      this.bySession.delete(id);
      for (const c of set) {
        c.sessionId = null;
        c.principal = null;
        then(c);
      }
    }
  }

  /** Another process (the CLI) may have deleted users or sessions: close what no longer exists. */
  private async watchDatabase(): Promise<void> {
    if (!this.otherWriters()) return;
    const bound: Binding[] = [];
    for (const [uuid, c] of this.byClient) if (c.clientKeyId !== null) bound.push({ uuid, keyId: c.clientKeyId });
    await this.kickLost(bound);
    // Sessions that ran out are not ended ones, even if their rows are gone by now.
    await this.expireRanOut();
    const ids = [...this.bySession.keys()];
    if (ids.length === 0) return;
    const alive = await this.services.sessions.stillExisting(ids);
    const gone = ids.filter((id) => !alive.has(id));
    if (gone.length > 0) this.closeSessions(gone, "session revoked");
  }

  private closeIdle(): void {
    const now = this.services.clock();
    const cutoff = now - this.options.idleSeconds * 1000;
    const deadline = now - this.options.authTimeoutSeconds * 1000;
    for (const c of this.all) {
      if (c.overflowedAt !== null) this.closeIfDrained(c);
      else if (c.lastMessageAt <= cutoff) this.shut(c, CLOSE_IDLE, "idle timeout");
      else if (!c.identified && c.openedAt <= deadline) {
        this.shut(c, CLOSE_AUTH_TIMEOUT, `sign in or register within ${this.options.authTimeoutSeconds} s of connecting`);
      }
    }
    // Only sessions known to have run out: one ended by another process (the CLI) is closed by
    // watchDatabase with 4001, not quietly detached here.
    void this.expireRanOut().catch((error: unknown) => this.log.error("checking sessions failed", { error: String(error) }));
  }

  /** Detaches the sockets of sessions known to have run out. */
  private async expireRanOut(): Promise<void> {
    const ids = [...this.bySession.keys()];
    const ranOut = await Promise.all(ids.map((id) => this.services.sessions.ranOut(id)));
    this.expireSessions(ids.filter((_, i) => ranOut[i]));
  }

  /** Pushes an event to signed-in admins, and to viewers of one of its groups (if it has any). */
  async push(topic: string, args: Record<string, unknown>, groups?: string[]): Promise<void> {
    const frame = JSON.stringify({ namespace: "events", name: topic, args } satisfies EventEnvelope);
    // Only connections signed in to a session read events: walking those, not every socket, keeps
    // a push (one per registration) from costing in proportion to the clients connected.
    const readers: Connection[] = [];
    for (const connections of this.bySession.values()) {
      for (const c of connections) {
        const p = c.principal;
        if (p !== null && (p.role === "admin" || groups === undefined || groups.some((g) => p.groups.includes(g)))) readers.push(c);
      }
    }
    // Checked without sliding the idle timer: a push is not the user's activity.
    const sessionIds = [...new Set(readers.map((c) => c.principal!.sessionId))];
    const alive = new Set(
      (await Promise.all(sessionIds.map(async (id) => ((await this.services.sessions.isAlive(id)) ? id : null)))).filter(
        (id) => id !== null,
      ),
    );
    for (const c of readers) if (c.principal !== null && alive.has(c.principal.sessionId)) this.send(c, frame);
  }
}
