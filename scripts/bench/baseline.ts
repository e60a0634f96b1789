/**
 * The yardstick for `scripts/bench/run.ts`: a bare Bun.serve hello-world on loopback. It answers
 * every method and path the same way and never reads the body, as SPEC §10's baseline does.
 *
 *   bun scripts/bench/baseline.ts [--port N]     # prints the port it listens on, then serves
 */
const portFlag = process.argv.indexOf("--port");
const port = portFlag === -1 ? 0 : Number(process.argv[portFlag + 1]);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch: () => new Response("Hello, world!"),
});

process.stdout.write(`${server.port}\n`);

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    server.stop(true);
    process.exit(0);
  });
}
