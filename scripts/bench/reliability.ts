/**
 * Measures how the compiled binary holds up under the attacks of docs/reliability.md: guesses sent
 * at once, a burst of guesses from many addresses while someone else logs in, and a flood of idle
 * WebSockets. Each scenario gets a fresh server and data directory.
 *
 *   bun scripts/bench/reliability.ts [--binary dist/latchkey] [--only guesses,burst,flood,burst-one-address] [--runs 3]
 *
 * Many client addresses come through `--trusted-proxy 127.0.0.1/32` and X-Forwarded-For (`burst`,
 * `flood`), as behind a reverse proxy. `guesses` and `burst-one-address` (the burst and the
 * bystander all from 127.0.0.1) use no such flag, so they also run against older binaries. Prints
 * one JSON object per scenario.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const ROOT = join(import.meta.dir, "..", "..");
const PASSWORD = "reliability admin password";

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { binary: { type: "string" }, only: { type: "string" }, runs: { type: "string" } },
});
const binary = values.binary ?? join(ROOT, "dist", "latchkey");
const only = new Set((values.only ?? "guesses,burst,flood").split(","));
const runs = Number(values.runs ?? 3);

interface Server {
  url: string;
  stop(): Promise<void>;
}

async function startServer(flags: string[] = []): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "latchkey-reliability-"));
  const proc = Bun.spawn([binary, "server", "--listen", "127.0.0.1:0", "--data-dir", dir, ...flags], {
    env: { PATH: "/usr/bin:/bin", LATCHKEY_ADMIN_PASSWORD: PASSWORD },
    stdout: "ignore",
    stderr: "pipe",
  });
  const reader = proc.stderr.getReader();
  let log = "";
  let url: string | undefined;
  while (!url) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${log}`);
    log += new TextDecoder().decode(value);
    url = /url=(\S+)/.exec(log)?.[1];
  }
  (async () => {
    while (!(await reader.read()).done);
  })();
  return {
    url,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function login(url: string, username: string, password: string, address?: string): Promise<Response> {
  return fetch(`${url}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(address ? { "x-forwarded-for": address } : {}) },
    body: JSON.stringify({ username, password }),
  });
}

async function adminToken(url: string): Promise<string> {
  return ((await (await login(url, "admin", PASSWORD)).json()) as { token: string }).token;
}

async function createUser(url: string, token: string, username: string, password: string): Promise<void> {
  const res = await fetch(`${url}/api/users`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ username, password }),
  });
  if (res.status !== 201) throw new Error(`create ${username}: ${res.status}`);
}

function tally(statuses: (number | string)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of statuses) out[s] = (out[s] ?? 0) + 1;
  return out;
}

/** Opens a WebSocket (with headers), resolving when open; null when refused. */
function openSocket(url: string, headers: Record<string, string> = {}): Promise<WebSocket | null> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, "ws") + "/ws", { headers } as unknown as string[]);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => resolve(null);
  });
}

/** Sends frames on one socket without waiting, and collects one reply per frame. */
function pipeline(ws: WebSocket, frames: object[]): Promise<any[]> {
  return new Promise((resolve) => {
    const replies: any[] = [];
    ws.onmessage = (e) => {
      replies.push(JSON.parse(String(e.data)));
      if (replies.length === frames.length) resolve(replies);
    };
    for (const f of frames) ws.send(JSON.stringify(f));
  });
}

/** 100 parallel REST guesses, then 2,500 pipelined rpc/auth frames, on one account from one address. */
async function guesses() {
  const rest = await startServer();
  let restStatuses: Record<string, number>;
  try {
    const token = await adminToken(rest.url);
    await createUser(rest.url, token, "victim", PASSWORD);
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => login(rest.url, "victim", i === 99 ? PASSWORD : `guess ${i}`)));
    restStatuses = tally(replies.map((r) => r.status));
  } finally {
    await rest.stop();
  }
  const ws = await startServer();
  let wsStatuses: Record<string, number>;
  try {
    const token = await adminToken(ws.url);
    await createUser(ws.url, token, "victim", PASSWORD);
    const socket = (await openSocket(ws.url))!;
    const frames = Array.from({ length: 2500 }, (_, i) => ({
      namespace: "rpc",
      name: "auth",
      id: i,
      args: { username: "victim", password: i === 2499 ? PASSWORD : `guess ${i}` },
    }));
    const replies = await pipeline(socket, frames);
    wsStatuses = tally(replies.map((r) => (r.name === "response" ? 200 : r.args.code)));
    socket.close();
  } finally {
    await ws.stop();
  }
  return { scenario: "guesses", rest_100_parallel: restStatuses, ws_2500_pipelined: wsStatuses };
}

/** A correct login from another address, alone and during 600 guesses from 30 addresses (20 frames on each of 30 sockets). */
async function burst() {
  const server = await startServer(["--trusted-proxy", "127.0.0.1/32"]);
  try {
    const token = await adminToken(server.url);
    await createUser(server.url, token, "bystander", PASSWORD);
    const idle: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      if ((await login(server.url, "bystander", PASSWORD, `10.9.9.${i}`)).status !== 200) throw new Error("login failed");
      idle.push(performance.now() - t);
    }
    const during: number[] = [];
    const evaluated: number[] = [];
    for (let run = 0; run < runs; run++) {
      const sockets = (await Promise.all(
        Array.from({ length: 30 }, (_, a) => openSocket(server.url, { "x-forwarded-for": `10.${run}.0.${a}` })),
      )) as WebSocket[];
      const all = sockets.map((s, a) =>
        pipeline(
          s,
          Array.from({ length: 20 }, (_, i) => ({
            namespace: "rpc",
            name: "auth",
            id: i,
            args: { username: `target${run}.${a}.${i % 4}`, password: `guess ${i}` },
          })),
        ),
      );
      await Bun.sleep(50);
      const t = performance.now();
      const res = await login(server.url, "bystander", PASSWORD, `10.200.0.${run}`);
      during.push(performance.now() - t);
      if (res.status !== 200) throw new Error(`bystander got ${res.status}`);
      const replies = (await Promise.all(all)).flat();
      evaluated.push(replies.filter((r) => r.args?.code === 401).length);
      for (const s of sockets) s.close();
      // Let the addresses' throttles not matter for the next run: they use other addresses.
    }
    return {
      scenario: "burst",
      login_ms_idle: idle.map((ms) => Math.round(ms)),
      login_ms_during_600_guesses: during.map((ms) => Math.round(ms)),
      guesses_evaluated_per_burst: evaluated,
    };
  } finally {
    await server.stop();
  }
}

/** The burst from one address (no proxy), the bystander on another account from the same address. */
async function burstOneAddress() {
  const server = await startServer();
  try {
    const token = await adminToken(server.url);
    await createUser(server.url, token, "bystander", PASSWORD);
    const sockets = (await Promise.all(Array.from({ length: 30 }, () => openSocket(server.url)))) as WebSocket[];
    const all = sockets.map((s, a) =>
      pipeline(
        s,
        Array.from({ length: 20 }, (_, i) => ({
          namespace: "rpc",
          name: "auth",
          id: i,
          args: { username: `target${a}.${i % 4}`, password: `guess ${i}` },
        })),
      ),
    );
    await Bun.sleep(50);
    const t = performance.now();
    const res = await login(server.url, "bystander", PASSWORD);
    const ms = performance.now() - t;
    const replies = (await Promise.all(all)).flat();
    for (const s of sockets) s.close();
    return {
      scenario: "burst-one-address",
      bystander: { status: res.status, ms: Math.round(ms) },
      guesses: tally(replies.map((r) => r.args?.code ?? 200)),
    };
  } finally {
    await server.stop();
  }
}

/** 10,000 idle WebSockets attempted from one address; what is held, and /healthz and login meanwhile. */
async function flood() {
  const server = await startServer(["--trusted-proxy", "127.0.0.1/32"]);
  try {
    const attempts = 10_000;
    const opened: WebSocket[] = [];
    let refused = 0;
    for (let i = 0; i < attempts; i += 500) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(500, attempts - i) }, () => openSocket(server.url, { "x-forwarded-for": "10.66.0.1" })),
      );
      for (const ws of batch) ws ? opened.push(ws) : refused++;
    }
    const t1 = performance.now();
    const health = (await fetch(`${server.url}/healthz`)).status;
    const healthMs = performance.now() - t1;
    const t2 = performance.now();
    const loginStatus = (await login(server.url, "admin", PASSWORD, "10.77.0.1")).status;
    const loginMs = performance.now() - t2;
    const closedBy = await Promise.race([
      Promise.all(
        opened.map(
          (ws) =>
            new Promise<number>((resolve) =>
              ws.readyState === WebSocket.CLOSED ? resolve(ws.readyState) : ws.addEventListener("close", (e) => resolve(e.code)),
            ),
        ),
      ),
      Bun.sleep(15_000).then(() => null),
    ]);
    return {
      scenario: "flood",
      attempts,
      held: opened.length,
      refused,
      healthz: { status: health, ms: Math.round(healthMs) },
      login: { status: loginStatus, ms: Math.round(loginMs) },
      held_closed_after_deadline: closedBy === null ? "not within 15 s" : tally(closedBy),
    };
  } finally {
    await server.stop();
  }
}

for (const [name, run] of [
  ["guesses", guesses],
  ["burst", burst],
  ["burst-one-address", burstOneAddress],
  ["flood", flood],
] as const) {
  if (only.has(name)) console.log(JSON.stringify(await run()));
}
