/**
 * Live WebSocket connections: each carries at most one session; messages are dispatched
 * through the registry; sessions that end (logout, user deleted, password changed — here or by
 * the CLI in another process) close their sockets; silent sockets are closed after the idle limit.
 */
import * as v from "valibot";
import { AppError } from "../core/errors.ts";
import { describeIssue, issueField } from "../core/validation.ts";
import type { Principal } from "../core/sessions.ts";
import type { Services } from "../core/services.ts";
import type { Logger } from "../log.ts";
import { errorEnvelope, requestEnvelope, response, type EventEnvelope, type RequestId } from "./protocol.ts";
import type { Registry } from "./registry.ts";

/** The part of a WebSocket this module needs (Bun's ServerWebSocket fits). */
export interface Socket {
  send(data: string): unknown;
  close(code?: number, reason?: string): void;
}

export interface Connection {
  socket: Socket;
  address: string | null;
  sessionId: string | null;
  principal: Principal | null;
  /** Set once the connection registered as an enrolled client. */
  clientUuid: string | null;
  /** The enrollment key that client was admitted with (null when none was required). */
  clientKeyId: number | null;
  lastMessageAt: number;
}

export const CLOSE_SESSION_ENDED = 4001;
export const CLOSE_IDLE = 4000;
export const CLOSE_CLIENT_REVOKED = 4003;

export class Connections {
  private readonly all = new Set<Connection>();
  private readonly bySession = new Map<string, Set<Connection>>();
  private readonly byClient = new Map<string, Connection>();
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private dataVersion = -1;

  constructor(
    private readonly services: Services,
    private readonly registry: Registry,
    private readonly log: Logger,
    private readonly options: { idleSeconds: number },
  ) {
    services.events.on("sessions.revoked", ({ sessionIds, reason }) => this.closeSessions(sessionIds, reason));
    services.events.on("push", (event) => this.push(event.topic, event.args, event.groups));
    services.events.on("clients.kick", ({ uuids, reason, keyId }) => this.kickClients(uuids, reason, keyId));
    services.metrics.gauge("latchkey_ws_connections", () => this.all.size);
    services.metrics.gauge("latchkey_connected_clients", () => this.byClient.size);
    services.enrollment.setPresence((uuid) => this.byClient.has(uuid), () => [...this.byClient.keys()]);
  }

  get size(): number {
    return this.all.size;
  }

  /** Starts the idle sweep and the watch for changes made by other processes (the CLI). */
  start(): void {
    const sweepMs = Math.max(250, Math.min(5000, (this.options.idleSeconds * 1000) / 5));
    const idle = setInterval(() => this.closeIdle(), sweepMs);
    const watch = setInterval(() => this.watchDatabase(), 500);
    idle.unref?.();
    watch.unref?.();
    this.timers.push(idle, watch);
  }

  stop(reason: string): void {
    for (const t of this.timers) clearInterval(t);
    for (const c of this.all) c.socket.close(1001, reason);
    this.all.clear();
    this.byClient.clear();
    this.bySession.clear();
  }

  open(socket: Socket, address: string | null, principal: Principal | null): Connection {
    const connection: Connection = { socket, address, sessionId: null, principal: null, clientUuid: null, clientKeyId: null, lastMessageAt: this.services.clock() };
    this.all.add(connection);
    if (principal) this.signIn(connection, principal);
    return connection;
  }

  close(connection: Connection): void {
    this.all.delete(connection);
    this.forget(connection);
    const uuid = connection.clientUuid;
    if (uuid !== null && this.byClient.get(uuid) === connection) {
      this.byClient.delete(uuid);
      this.services.enrollment.disconnected(uuid);
    }
  }

  /** Closes these clients' sockets; with keyId, only those admitted with that key. */
  private kickClients(uuids: string[], reason: string, keyId?: number): void {
    for (const uuid of uuids) {
      const connection = this.byClient.get(uuid);
      if (!connection) continue;
      if (keyId !== undefined && connection.clientKeyId !== keyId) continue;
      this.byClient.delete(uuid);
      connection.clientUuid = null;
      connection.clientKeyId = null;
      connection.socket.close(CLOSE_CLIENT_REVOKED, reason);
      this.services.enrollment.disconnected(uuid);
    }
  }

  private signIn(connection: Connection, principal: Principal): void {
    this.forget(connection);
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
      // Each message re-checks the session: it may have expired or been revoked meanwhile.
      if (connection.sessionId !== null) {
        const principal = this.services.sessions.authenticateId(connection.sessionId);
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
            signIn: (login) => this.signIn(connection, "userId" in login ? login : this.principalOf(login.sessionId)),
            signOut: () => this.forget(connection),
            clientUuid: () => connection.clientUuid,
            clientConnectedElsewhere: (uuid) => {
              const other = this.byClient.get(uuid);
              return other !== undefined && other !== connection;
            },
            registerClient: (uuid, keyId) => {
              connection.clientUuid = uuid;
              connection.clientKeyId = keyId;
              this.byClient.set(uuid, connection);
            },
          },
        },
        namespace,
        name,
        args,
      );
      connection.socket.send(JSON.stringify(response(id, result)));
    } catch (error) {
      connection.socket.send(JSON.stringify(errorEnvelope(id, this.errorArgs(error))));
    }
  }

  private principalOf(sessionId: string): Principal {
    const principal = this.services.sessions.authenticateId(sessionId);
    if (!principal) throw new AppError("unauthorized", "Unauthorized");
    return principal;
  }

  private errorArgs(error: unknown): { code: number; message: string; field?: string; retry_after?: number } {
    if (error instanceof AppError) {
      const args: { code: number; message: string; field?: string; retry_after?: number } = {
        code: error.status,
        message: error.status === 401 ? "Unauthorized" : error.message,
      };
      if (error.field !== undefined) args.field = error.field;
      if (error.retryAfter !== undefined) args.retry_after = error.retryAfter;
      return args;
    }
    this.log.error("unhandled RPC error", { error: String((error as Error)?.stack ?? error) });
    return { code: 500, message: "internal error; the server log has the details" };
  }

  private closeSessions(sessionIds: string[], reason: string): void {
    for (const id of sessionIds) {
      const set = this.bySession.get(id);
      if (!set) continue;
      this.bySession.delete(id);
      for (const c of set) {
        c.sessionId = null;
        c.principal = null;
        c.socket.close(CLOSE_SESSION_ENDED, `session ended: ${reason}`);
      }
    }
  }

  /** Another process (the CLI) may have deleted users or sessions: close what no longer exists. */
  private watchDatabase(): void {
    const version = this.services.db.query<{ data_version: number }, []>("PRAGMA data_version").get()!.data_version;
    if (version === this.dataVersion) return;
    this.dataVersion = version;
    const bound: { uuid: string; keyId: number }[] = [];
    for (const [uuid, c] of this.byClient) if (c.clientKeyId !== null) bound.push({ uuid, keyId: c.clientKeyId });
    const lost = this.services.enrollment.lostBindings(bound);
    if (lost.length > 0) this.kickClients(lost, "AUTH_FAILED: Invalid or revoked key");
    const ids = [...this.bySession.keys()];
    if (ids.length === 0) return;
    const alive = this.services.sessions.stillExisting(ids);
    const gone = ids.filter((id) => !alive.has(id));
    if (gone.length > 0) this.closeSessions(gone, "session revoked");
  }

  private closeIdle(): void {
    const cutoff = this.services.clock() - this.options.idleSeconds * 1000;
    for (const c of this.all) if (c.lastMessageAt <= cutoff) c.socket.close(CLOSE_IDLE, "idle timeout");
    // Sessions also end by themselves (idle or absolute limit): their sockets must not linger.
    const expired = [...this.bySession.keys()].filter((id) => !this.services.sessions.isAlive(id));
    if (expired.length > 0) this.closeSessions(expired, "session expired");
  }

  /** Pushes an event to signed-in admins, and to viewers of one of its groups (if it has any). */
  push(topic: string, args: Record<string, unknown>, groups?: string[]): void {
    const frame = JSON.stringify({ namespace: "events", name: topic, args } satisfies EventEnvelope);
    const alive = new Map<string, boolean>();
    for (const c of this.all) {
      const p = c.principal;
      if (!p) continue;
      // Checked without sliding the idle timer: a push is not the user's activity.
      let ok = alive.get(p.sessionId);
      if (ok === undefined) alive.set(p.sessionId, (ok = this.services.sessions.isAlive(p.sessionId)));
      if (!ok) continue;
      if (p.role === "admin" || groups === undefined || groups.some((g) => p.groups.includes(g))) c.socket.send(frame);
    }
  }
}
