/**
 * The WebSocket yardstick for the `register` and `idle` scenarios of `scripts/bench/run.ts`: a bare
 * Bun.serve that upgrades `/ws` (same socket options as latchkey: no idle timeout, pings on, no
 * compression) and answers every message with the envelope a successful `client/register` gets,
 * echoing the request id. No database, no validation, no audit: the floor that Bun itself costs.
 *
 *   bun scripts/bench/ws-baseline.ts [--port N]     # prints the port it listens on, then serves
 */
const portFlag = process.argv.indexOf("--port");
const port = portFlag === -1 ? 0 : Number(process.argv[portFlag + 1]);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(request, server) {
    if (new URL(request.url).pathname === "/ws" && server.upgrade(request)) return undefined;
    return new Response("Hello, world!");
  },
  websocket: {
    idleTimeout: 0,
    sendPings: true,
    perMessageDeflate: false,
    message(ws, message) {
      const { id } = JSON.parse(String(message)) as { id?: unknown };
      ws.send(JSON.stringify({ namespace: "rpc", name: "response", id: id ?? null, args: { registered: true, reconnect: false } }));
    },
  },
});

process.stdout.write(`${server.port}\n`);

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    server.stop(true);
    process.exit(0);
  });
}

export {};
