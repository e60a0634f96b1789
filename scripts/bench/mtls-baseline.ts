/**
 * The yardstick for the `mtls` scenario (`scripts/bench/mtls.ts`, for `scripts/bench/run.ts`): a
 * bare Bun.serve over TLS on loopback that asks every client for a certificate (`requestCert`,
 * verified against --ca by Bun's TLS layer, but a missing or failing one is not refused:
 * `rejectUnauthorized: false`). `POST /api/hosts/:hostname/client` reads the whole body, unparsed,
 * and answers a small JSON 200; any other request gets a 404. No certificate check of its own,
 * no JSON parsing, no database: the floor that Bun's TLS server itself costs (SPEC §10).
 *
 *   bun scripts/bench/mtls-baseline.ts --cert server.pem --key server.key --ca ca.pem [--port N]
 *
 * It prints the port it listens on, then serves until SIGTERM or SIGINT.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { cert: { type: "string" }, key: { type: "string" }, ca: { type: "string" }, port: { type: "string" } },
  strict: true,
});
if (!values.cert || !values.key || !values.ca) throw new Error("--cert, --key and --ca are required");
const port = Number(values.port ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be 0 to 65535 (got ${values.port})`);

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  tls: {
    cert: readFileSync(values.cert, "utf8"),
    key: readFileSync(values.key, "utf8"),
    ca: readFileSync(values.ca, "utf8"),
    requestCert: true,
    rejectUnauthorized: false,
  },
  routes: {
    "/api/hosts/:hostname/client": {
      POST: async (request) => {
        await request.arrayBuffer();
        return Response.json({ ok: true });
      },
    },
  },
  fetch: () => new Response("Not Found", { status: 404 }),
});

process.stdout.write(`${server.port}\n`);

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    server.stop(true);
    process.exit(0);
  });
}
