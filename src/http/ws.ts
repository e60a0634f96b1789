/** `GET /ws`: the RPC WebSocket. Browsers must come from this very origin. */
import { Elysia } from "elysia";
import { AppError, forbidden, unauthorized } from "../core/errors.ts";
import type { Connection, Connections, Socket } from "../rpc/connections.ts";
import { COOKIE_PLAIN, COOKIE_TLS, originAllowed, readCookie, type SessionPlugin } from "./session.ts";

export function wsRoute(connections: Connections, session: SessionPlugin) {
  const byRaw = new WeakMap<object, Connection>();
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
      const { principal, address } = ws.data;
      // Elysia's type of the raw socket omits getBufferedAmount, which Bun's ServerWebSocket has.
      const connection = connections.open(ws.raw as unknown as Socket, address, principal);
      if (!connection) return;
      byRaw.set(ws.raw, connection);
      // Elysia decodes frames loosely before its `message` hook (a JSON string frame arrives as
      // its content), so a string frame holding an envelope would be dispatched. Bun calls
      // `data.message` with the frame as sent: take it there, so that it is parsed exactly once.
      (ws.raw.data as { message: (raw: unknown, frame: string | Buffer) => Promise<void> }).message = (_, frame) =>
        connections.message(connection, frame);
    },
    drain(ws) {
      const connection = byRaw.get(ws.raw);
      if (connection) connections.drained(connection);
    },
    close(ws) {
      const connection = byRaw.get(ws.raw);
      if (connection) connections.close(connection);
      byRaw.delete(ws.raw);
    },
    detail: {
      tags: ["rpc"],
      summary: "RPC over WebSocket",
      description: "JSON frames `{namespace, name, id, args}`; replies echo `id` with namespace `rpc` and name `response` or `error`.",
    },
  });
}
