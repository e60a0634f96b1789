/**
 * The mTLS front on its own, over real sockets, with certificates made by openssl: its connection
 * cap, the close of connections that never finish a handshake or fall silent, and its pipe to the
 * inner server (a WebSocket through it).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { MtlsFront, type FastPath } from "../src/http/mtls-front.ts";
import { eventually, tempDir } from "./support.ts";

let dir: ReturnType<typeof tempDir>;
const pem: Record<string, string> = {};

function openssl(...args: string[]): void {
  const run = Bun.spawnSync(["openssl", ...args], { cwd: dir.path, stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${run.stderr.toString()}`);
}

beforeAll(async () => {
  dir = tempDir("latchkey-front-");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(
    "req",
    "-x509",
    ...ec,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "30",
    "-subj",
    "/CN=Front Test Root",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
  );
  openssl("req", "-new", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir.path, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "30",
    "-extfile",
    "server.ext",
  );
  for (const name of ["ca.pem", "server.pem", "server.key"]) pem[name] = await Bun.file(join(dir.path, name)).text();
});
afterAll(() => dir.remove());

const fast: FastPath<string> = {
  accepts: (method, path) => method === "POST" && path === "/fast",
  maxBody: 1024,
  headers: {},
  handle: async (request, peer) => ({
    status: 200,
    body: JSON.stringify({ fast: true, peer: peer.identity, length: request.body.length }),
  }),
};

function start(options: { maxConnections?: number; idleSeconds?: number } = {}) {
  let front!: MtlsFront<string>;
  const inner = Bun.serve<string>({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request, server) {
      const peer = front.peerOf(server.requestIP(request)!.port);
      if (server.upgrade(request, { data: peer?.identity ?? "unknown" })) return;
      return Response.json({ fast: false, peer: peer?.identity ?? "unknown" });
    },
    websocket: {
      message: (ws, message) => void ws.send(`${ws.data} says ${message}`),
    },
  });
  front = new MtlsFront<string>({
    hostname: "127.0.0.1",
    port: 0,
    cert: pem["server.pem"]!,
    key: pem["server.key"]!,
    ca: pem["ca.pem"]!,
    innerPort: inner.port!,
    identify: (der) => (der === null ? "anonymous" : "certified"),
    fast,
    maxConnections: options.maxConnections ?? 100,
    idleSeconds: options.idleSeconds ?? 60,
  });
  front.start();
  return { front, stop: () => (front.stop(), inner.stop(true)) };
}

/** A TLS connection without a client certificate; resolves once the handshake is done. */
async function tlsClient(port: number) {
  let closed = false;
  let received = "";
  let ready!: () => void;
  const handshook = new Promise<void>((resolve) => (ready = resolve));
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: { ca: pem["ca.pem"]!, serverName: "localhost" },
    socket: {
      handshake: () => ready(),
      data: (_, chunk) => void (received += chunk.toString()),
      close: () => void (closed = true),
    },
  });
  await Promise.race([handshook, Bun.sleep(3000)]);
  return { socket, closed: () => closed, received: () => received };
}

describe("the mTLS front", () => {
  test("answers the fast path itself and pipes the rest to the inner server; a WebSocket goes through the pipe", async () => {
    const { front, stop } = start();
    try {
      const client = await tlsClient(front.port);
      client.socket.write("POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
      await eventually(() => client.received().includes("\r\n\r\n{"), { what: "the fast answer" });
      expect(client.received()).toContain('{"fast":true,"peer":"anonymous","length":3}');
      client.socket.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
      await eventually(() => client.received().includes('"fast":false'), { what: "the piped answer" });
      client.socket.end();

      const ws = new WebSocket(`wss://localhost:${front.port}/ws`, { tls: { ca: pem["ca.pem"]! } } as never);
      const reply = await new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("hello");
        ws.onmessage = (event) => resolve(String(event.data));
        ws.onerror = () => reject(new Error("the WebSocket through the front failed"));
      });
      expect(reply).toBe("anonymous says hello");
      ws.close();
    } finally {
      stop();
    }
  });

  test("past maxConnections a new connection is closed at once; one closing makes room", async () => {
    const { front, stop } = start({ maxConnections: 3 });
    try {
      const held = await Promise.all([1, 2, 3].map(() => tlsClient(front.port)));
      const over = await tlsClient(front.port);
      await eventually(() => over.closed(), { what: "the connection over the cap to close" });
      expect(held.every((c) => !c.closed())).toBe(true);
      held[0]!.socket.end();
      await eventually(() => front.size === 2, { what: "the closed connection to leave" });
      const next = await tlsClient(front.port);
      next.socket.write("POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
      await eventually(() => next.received().includes('"fast":true'), { what: "an answer on the new connection" });
    } finally {
      stop();
    }
  });

  test("a connection that never finishes its handshake, and one that falls silent, are closed", async () => {
    const { front, stop } = start({ idleSeconds: 1 });
    try {
      // Plain TCP, no TLS at all: the handshake never completes.
      let plainClosed = false;
      const plain = connect(front.port, "127.0.0.1");
      plain.on("close", () => void (plainClosed = true));
      plain.on("error", () => {});
      const silent = await tlsClient(front.port);
      await eventually(() => plainClosed && silent.closed(), { timeoutMs: 5000, what: "both idle connections to close" });
    } finally {
      stop();
    }
  });
});
