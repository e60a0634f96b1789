/**
 * WebSockets under pressure, over real sockets: a socket that neither signs in nor registers in
 * time is closed; such sockets are capped per address (enrolled clients behind one address are
 * not); all sockets are capped so that /healthz, logins and open sockets keep working; a peer
 * that does not read its replies is disconnected with a reason (an outside client, in Python);
 * and a session that runs out leaves its socket open for the seed's 401 envelope.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  ADMIN_PASSWORD,
  call,
  eventually,
  login,
  manualClock,
  metric,
  RpcClient,
  spawnLatchkey,
  startTestServer,
  tempDir,
  waitForListening,
  type TestServer,
} from "./support.ts";

const PROXY = ["--trusted-proxy", "127.0.0.1/32"];
const from = (address: string) => ({ "x-forwarded-for": address });

/** The answer to a WebSocket upgrade request, as a plain HTTP exchange: 101, or why not. */
async function upgradeStatus(
  server: TestServer,
  headers: Record<string, string> = {},
): Promise<{ status: number; retryAfter: string | null; body: string }> {
  const res = await fetch(`${server.url}/ws`, {
    headers: {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      ...headers,
    },
  });
  const body = res.status === 101 ? "" : await res.text();
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body };
}

/**
 * Waits until the server's socket sweep has run on its current clock. The sweep runs on a real
 * timer whatever the clock, and in one pass closes the sockets that neither signed in nor
 * registered in time and lets go of sessions that ran out: `canary`, a socket that never signed
 * in and whose deadline the clock has passed, is closed by the first pass that sees the new time.
 */
async function sweepHasRun(canary: RpcClient): Promise<void> {
  const closed = await eventually(() => canary.closedWith, { what: "the server's socket sweep to close the canary socket" });
  expect(closed.code).toBe(4008);
}

/** A request's reply, or how the socket closed if it closed first (a request on a closed socket never answers). */
const replyOrClose = (client: RpcClient, reply: Promise<any>) => Promise.race([reply, client.closed]);

const register = (client: RpcClient, name = "box") =>
  client.request("client", "register", { uuid: randomUUID(), name, hostname: `${name}.example`, version: "1", os: "linux" });

describe("sockets that do not sign in or register", () => {
  let server: TestServer;
  // The deadline is measured on this clock; it moves only when a test moves it.
  const clock = manualClock(Date.now());
  beforeAll(async () => {
    server = await startTestServer({ clock, flags: [...PROXY, "--ws-auth-timeout", "1", "--ws-unauth-per-address", "5"] });
  });
  afterAll(() => server.close());

  test("are closed after the deadline (4008); signed-in and registered ones stay", async () => {
    const idle = await RpcClient.connect(server.wsUrl, from("10.20.0.1"));
    const signedIn = await RpcClient.connect(server.wsUrl, from("10.20.0.1"));
    const client = await RpcClient.connect(server.wsUrl, from("10.20.0.1"));
    expect((await signedIn.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
    expect((await register(client)).name).toBe("response");
    clock.advance(1500);
    const closed = await eventually(() => idle.closedWith, { what: "the server's sweep to close the idle socket" });
    expect(closed.code).toBe(4008);
    expect(closed.reason).toBe("sign in or register within 1 s of connecting");
    // The pass that closed it looked at the other two, on the same clock: they stay.
    expect(await replyOrClose(signedIn, signedIn.request("rpc", "query", {}))).toMatchObject({ name: "response" });
    expect(await replyOrClose(client, client.request("client", "heartbeat", {}))).toMatchObject({ namespace: "rpc" });
    signedIn.close();
    client.close();
  });

  test("are capped per address: past the cap the upgrade gets 429; other addresses and identified sockets are not held to it", async () => {
    const held = await Promise.all(Array.from({ length: 5 }, () => RpcClient.connect(server.wsUrl, from("10.20.1.1"))));
    const refused = await upgradeStatus(server, from("10.20.1.1"));
    expect(refused.status).toBe(429);
    expect(refused.retryAfter).toBe("5");
    expect(JSON.parse(refused.body).error.message).toContain("have not signed in or registered yet");
    expect((await upgradeStatus(server, from("10.20.1.2"))).status).toBe(101);
    // One of them signs in: it no longer counts, and a new socket may open.
    expect((await held[0]!.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
    const another = await RpcClient.connect(server.wsUrl, from("10.20.1.1"));
    // A socket that arrives signed in (bearer token on the upgrade) is not held to the cap either.
    const token = await login(server.url);
    const bearer = await RpcClient.connect(server.wsUrl, { ...from("10.20.1.1"), authorization: `Bearer ${token}` });
    expect((await bearer.request("rpc", "query", {})).name).toBe("response");
    for (const s of [...held, another, bearer]) s.close();
  });

  test("60 enrolled clients behind one address (NAT) all register and stay connected, 5 at a time", async () => {
    const clients: RpcClient[] = [];
    for (let batch = 0; batch < 12; batch++) {
      const opened = await Promise.all(Array.from({ length: 5 }, () => RpcClient.connect(server.wsUrl, from("10.20.2.1"))));
      const replies = await Promise.all(opened.map((c, i) => register(c, `nat-${batch}-${i}`)));
      expect(replies.every((r) => r.name === "response")).toBe(true);
      clients.push(...opened);
    }
    // Past the deadline for sockets that never identify themselves: these did, and stay.
    const canary = await RpcClient.connect(server.wsUrl, from("10.20.3.1"));
    clock.advance(1500);
    await sweepHasRun(canary);
    for (const c of clients)
      expect(await replyOrClose(c, c.request("client", "heartbeat", {}))).toMatchObject({ name: "response", args: "ok" });
    const token = await login(server.url);
    const online = await call(server.url, "GET", "/api/clients?status=online&limit=1000", { token });
    expect(online.body.items.filter((c: { name: string }) => c.name.startsWith("nat-"))).toHaveLength(60);
    for (const c of clients) c.close();
  });
});

describe("a flood of idle sockets from one address", () => {
  test("2,000 attempts: 64 are held until the deadline, the rest refused; /healthz, logins and open sockets keep working", async () => {
    const server = await startTestServer({ flags: [...PROXY, "--ws-auth-timeout", "2"] });
    const admin = await RpcClient.connect(server.wsUrl);
    expect((await admin.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
    try {
      const attempts = await Promise.allSettled(Array.from({ length: 2000 }, () => RpcClient.connect(server.wsUrl, from("10.21.0.1"))));
      const opened = attempts.filter((a) => a.status === "fulfilled").map((a) => (a as PromiseFulfilledResult<RpcClient>).value);
      expect(opened.length).toBe(64);
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } })).status).toBe(
        200,
      );
      expect((await admin.request("rpc", "query", {})).name).toBe("response");
      await eventually(() => opened.every((c) => c.closedWith), {
        timeoutMs: 15_000,
        what: () => `the server to close the flood (${opened.filter((c) => c.closedWith).length} of ${opened.length} closed)`,
      });
      expect(opened.every((c) => c.closedWith!.code === 4008)).toBe(true);
      expect((await upgradeStatus(server, from("10.21.0.1"))).status).toBe(101);
    } finally {
      admin.close();
      await server.close();
    }
  });
});

describe("the total of sockets", () => {
  test("beyond --max-connections new upgrades get 503, while /healthz, logins and open sockets keep working", async () => {
    const server = await startTestServer({ flags: [...PROXY, "--max-connections", "20"] });
    try {
      const token = await login(server.url);
      const open = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          RpcClient.connect(server.wsUrl, { ...from(`10.22.0.${i}`), authorization: `Bearer ${token}` }),
        ),
      );
      const refused = await upgradeStatus(server, { ...from("10.22.1.1"), authorization: `Bearer ${token}` });
      expect(refused.status).toBe(503);
      expect(JSON.parse(refused.body).error.message).toBe("the server holds as many connections as it can; retry later");
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect((await call(server.url, "POST", "/api/auth/login", { body: { username: "admin", password: ADMIN_PASSWORD } })).status).toBe(
        200,
      );
      expect((await open[0]!.request("rpc", "query", {})).name).toBe("response");
      open.pop()!.close();
      await eventually(async () => (await metric(server.url, "latchkey_ws_connections")) < 20, {
        what: "the server to count the closed socket out",
      });
      expect((await upgradeStatus(server, { authorization: `Bearer ${token}` })).status).toBe(101);
      for (const s of open) s.close();
    } finally {
      await server.close();
    }
  });

  test("by default it is the open-file limit less a reserve", async () => {
    const { defaultMaxConnections, openFileLimit } = await import("../src/config.ts");
    expect(defaultMaxConnections(20_000)).toBe(19_000);
    expect(defaultMaxConnections(1024)).toBe(768);
    expect(defaultMaxConnections(null)).toBe(768);
    const limit = openFileLimit();
    expect(limit).toBeGreaterThan(0);
    expect(defaultMaxConnections()).toBe(defaultMaxConnections(limit));
  });
});

/** An outside WebSocket client that sends requests and does not read the replies (Python, stdlib only). */
const NON_READER = String.raw`
import base64, json, os, socket, struct, sys, time
host, port, token, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n" % (host, port, key, token)).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 101"), head
def frame(payload):
    mask = os.urandom(4)
    n = len(payload)
    header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
sent = 0
s.settimeout(5)
try:
    for i in range(count):
        s.sendall(frame(json.dumps({"namespace": "latchkey", "name": "audit", "id": i, "args": {"limit": 1000}}).encode()))
        sent += 1
except OSError:
    pass
time.sleep(3)
data = b""
s.settimeout(10)
ended = "eof"
try:
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
except OSError as e:
    ended = repr(e)
sys.stderr.write("read %d bytes, then %s\n" % (len(data), ended))
ids, close = [], None
i = 0
while i + 2 <= len(data):
    op, n = data[i] & 0x0F, data[i + 1] & 0x7F
    i += 2
    if n == 126:
        n = struct.unpack(">H", data[i:i + 2])[0]; i += 2
    elif n == 127:
        n = struct.unpack(">Q", data[i:i + 8])[0]; i += 8
    payload = data[i:i + n]; i += n
    if len(payload) < n:
        break
    if op == 1:
        ids.append(json.loads(payload)["id"])
    elif op == 8:
        close = {"code": struct.unpack(">H", payload[:2])[0], "reason": payload[2:].decode()}
print(json.dumps({"sent": sent, "ids": ids, "close": close}))
`;

describe("a peer that does not read its replies", () => {
  test(
    "is disconnected with 1013 and a reason once its unread replies pass --ws-send-buffer; " +
      "the replies it got have no gaps; the log says so",
    async () => {
      const dir = tempDir();
      const proc = spawnLatchkey(["server", "--listen", "127.0.0.1:0", "--data-dir", dir.path, "--ws-send-buffer", "262144"], {
        env: { LATCHKEY_ADMIN_PASSWORD: ADMIN_PASSWORD },
      });
      try {
        const { url, log } = await waitForListening(proc);
        const token = await login(url);
        // Enough audit entries that each reply is large.
        await Promise.all(Array.from({ length: 200 }, () => call(url, "GET", "/api/auth/session", { token: "not-a-token" })));
        for (let i = 0; i < 100; i++)
          await call(url, "POST", "/api/auth/login", { body: { username: `nobody${i}`, password: "x".repeat(8) } }).catch(() => {});
        const script = join(dir.path, "non_reader.py");
        writeFileSync(script, NON_READER);
        const { port } = new URL(url);
        const py = Bun.spawn(["python3", script, "127.0.0.1", port, token, "2000"], { stdout: "pipe", stderr: "pipe" });
        const [out, err] = await Promise.all([new Response(py.stdout).text(), new Response(py.stderr).text(), py.exited]);
        const result = JSON.parse(out || `{"error": ${JSON.stringify(err)}}`) as {
          sent: number;
          ids: number[];
          close: { code: number; reason: string } | null;
        };
        expect(result.close).toEqual({ code: 1013, reason: "replies are not being read; disconnected" });
        expect(result.ids.length).toBeGreaterThan(0);
        expect(result.ids.length).toBeLessThan(2000);
        expect(result.ids).toEqual(result.ids.map((_, i) => i));
        expect(log()).toContain("disconnecting a WebSocket that does not read its replies");
        // The server is fine: a new socket and a login work.
        const client = await RpcClient.connect(url.replace(/^http/, "ws") + "/ws");
        expect((await client.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
        client.close();
      } finally {
        proc.kill("SIGTERM");
        await proc.exited;
        dir.remove();
      }
    },
  );
});

describe("a session that runs out leaves its socket open", () => {
  test(
    "idle limit: the next call gets the seed's 401 envelope on the same socket, " + "which may sign in again; ws-idle later closes it",
    async () => {
      const clock = manualClock(Date.now());
      const server = await startTestServer({ clock, flags: ["--ws-idle", "600"] });
      const client = await RpcClient.connect(server.wsUrl);
      try {
        expect((await client.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
        const canary = await RpcClient.connect(server.wsUrl);
        clock.advance(301_000);
        // The server's sweep has seen the session run out (and left the socket open).
        await sweepHasRun(canary);
        const raw = await new Promise<string>((resolve) => {
          client.ws.addEventListener("message", (e) => resolve(String(e.data)), { once: true });
          client.ws.send(JSON.stringify({ namespace: "rpc", name: "query", id: "sampleID", args: { junk: "junk" } }));
        });
        expect(JSON.parse(raw)).toEqual({ args: { code: 401, message: "Unauthorized" }, id: "sampleID", name: "error", namespace: "rpc" });
        expect((await client.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
        expect((await client.request("rpc", "query", {})).name).toBe("response");
        clock.advance(601_000);
        expect((await eventually(() => client.closedWith, { what: "the ws-idle close" })).code).toBe(4000);
      } finally {
        client.close();
        await server.close();
      }
    },
  );

  test("absolute limit: the same; signing in again and then logging out elsewhere (an explicit end) closes at once (4001)", async () => {
    const clock = manualClock(Date.now());
    const server = await startTestServer({ clock, flags: ["--session-absolute", "60"] });
    const ranOut = await RpcClient.connect(server.wsUrl);
    const ended = await RpcClient.connect(server.wsUrl);
    try {
      expect((await ranOut.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
      expect((await ended.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).name).toBe("response");
      for (let i = 0; i < 3; i++) {
        clock.advance(15_000);
        expect((await ranOut.request("rpc", "query", {})).name).toBe("response");
      }
      const canary = await RpcClient.connect(server.wsUrl);
      clock.advance(16_000);
      // The server's sweep has seen the session run out (and left the socket open).
      await sweepHasRun(canary);
      expect(await ranOut.request("rpc", "query", {})).toMatchObject({ name: "error", args: { code: 401, message: "Unauthorized" } });
      const fresh = (await ranOut.request("rpc", "auth", { username: "admin", password: ADMIN_PASSWORD })).args[0];
      expect((await call(server.url, "POST", "/api/auth/logout", { token: fresh })).status).toBe(200);
      expect((await eventually(() => ranOut.closedWith, { what: "the server to close the logged-out socket" })).code).toBe(4001);
      // The other socket's session ran out too (same absolute limit), and it stays open.
      expect(await ended.request("rpc", "query", {})).toMatchObject({ name: "error", args: { code: 401 } });
    } finally {
      ranOut.close();
      ended.close();
      await server.close();
    }
  });
});
