/** `GET /ws`: the RPC WebSocket. Browsers must come from this very origin. */
import { Elysia } from "elysia";
import type { CertificateIdentity } from "../core/ca/identity.ts";
import { AppError, forbidden, unauthorized } from "../core/errors.ts";
import type { Principal } from "../core/sessions.ts";
import type { Connection, Connections, Listener, Socket } from "../rpc/connections.ts";
import { COOKIE_PLAIN, COOKIE_TLS, originAllowed, readCookie, type SessionPlugin } from "./session.ts";

/** A raw Bun socket as Elysia hands it to `open`, `drain` and `close`. */
interface RawSocket {
  data: unknown;
}

/**
 * The socket events of a `/ws` route, for the main listener and the mTLS one alike: each open
 * socket becomes a connection of `connections`, and its frames go to it exactly as sent.
 */
export function socketEvents(connections: Connections) {
  const byRaw = new WeakMap<object, Connection>();
  return {
    open(
      raw: RawSocket,
      address: string | null,
      principal: Principal | null,
      via?: { listener: Listener; certificate: CertificateIdentity | null },
    ) {
      // Elysia's type of the raw socket omits getBufferedAmount, which Bun's ServerWebSocket has.
      const connection = connections.open(raw as unknown as Socket, address, principal, via);
      if (!connection) return;
      byRaw.set(raw, connection);
      // Elysia decodes frames loosely before its `message` hook (a JSON string frame arrives as
      // its content), so a string frame holding an envelope would be dispatched. Bun calls
      // `data.message` with the frame as sent: take it there, so that it is parsed exactly once.
      (raw.data as { message: (raw: unknown, frame: string | Buffer) => Promise<void> }).message = (_, frame) =>
        connections.message(connection, frame);
    },
    drain(raw: RawSocket) {
      const connection = byRaw.get(raw);
      if (connection) connections.drained(connection);
    },
    close(raw: RawSocket) {
      const connection = byRaw.get(raw);
      if (connection) connections.close(connection);
      byRaw.delete(raw);
    },
  };
}

export function wsRoute(connections: Connections, session: SessionPlugin) {
  const events = socketEvents(connections);
  return new Elysia({ name: "latchkey/http/ws" }).use(session).ws("/ws", {
    rpc: true,
    beforeHandle({ request, principal, address }) {
      if (!originAllowed(request)) throw forbidden("WebSocket refused: the Origin is not this server");
      // A stale panel cookie must not quietly become an anonymous socket: the panel would not know.
      const cookieHeader = request.headers.get("cookie");
      const hasCookie = readCookie(cookieHeader, COOKIE_PLAIN) !== undefined || readCookie(cookieHeader, COOKIE_TLS) !== undefined;
      if (hasCookie && !principal) throw unauthorized("the session cookie is unknown or has expired; sign in again");
      const refusal = connections.refusal(address, principal !== null);
      if (refusal) throw new AppError(refusal.status === 503 ? "unavailable" : "throttled", refusal.message, { retryAfter: 5 });
    },
    open(ws) {
      events.open(ws.raw, ws.data.address, ws.data.principal);
    },
    drain(ws) {
      events.drain(ws.raw);
    },
    close(ws) {
      events.close(ws.raw);
    },
    detail: {
      tags: ["rpc"],
      summary: "RPC over WebSocket",
      description: "JSON frames `{namespace, name, id, args}`; replies echo `id` with namespace `rpc` and name `response` or `error`.",
    },
  });
}
