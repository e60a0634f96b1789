/** `GET /ws`: the RPC WebSocket. Browsers must come from this very origin. */
import { Elysia } from "elysia";
import { forbidden } from "../core/errors.ts";
import type { Connection, Connections } from "../rpc/connections.ts";
import { originAllowed, type Caller } from "./session.ts";

export function wsRoute(connections: Connections) {
  const byRaw = new WeakMap<object, Connection>();
  return new Elysia({ name: "latchkey/http/ws" }).ws("/ws", {
    beforeHandle({ request }) {
      if (!originAllowed(request)) throw forbidden("WebSocket refused: the Origin is not this server");
    },
    open(ws) {
      const { principal, address } = ws.data as unknown as Caller;
      byRaw.set(ws.raw, connections.open(ws.raw, address, principal));
    },
    async message(ws, message) {
      const connection = byRaw.get(ws.raw);
      if (connection) await connections.message(connection, message);
    },
    close(ws) {
      const connection = byRaw.get(ws.raw);
      if (connection) connections.close(connection);
      byRaw.delete(ws.raw);
    },
    detail: { tags: ["rpc"], summary: "RPC over WebSocket", description: "JSON frames `{namespace, name, id, args}`; replies echo `id` with namespace `rpc` and name `response` or `error`." },
  });
}
