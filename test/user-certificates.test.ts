/**
 * Certificate login and the certificates users sign in with (sysadm `rpc/auth_ssl`, `rpc/settings`
 * and its alias `settings/sysadm`, SPEC §3), driven by outside tools: keys, certificates, requests
 * and every proof are made by `openssl` (`req -x509`, `req -new`, `dgst -sha256 -sign`, `pkeyutl
 * -sign`), and the logins run over real WebSockets on the main listener and on the mutual-TLS
 * listener, with a certificate of latchkey's CA in the handshake. Also the REST resources, issuing
 * user certificates from latchkey's CA (REST and CLI: generated keys and openssl's requests, a race
 * on one key, revocation at the CA), the refusal of the CA's machine certificates for user login,
 * the CLI, throttling under pipelined frames, the 30 s life of a test string on an injected clock,
 * and the audit trail.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Registry, defineHandler } from "../src/rpc/registry.ts";
import * as v from "valibot";
import {
  call,
  createUser,
  login,
  manualClock,
  RpcClient,
  runLatchkey,
  startTestServer,
  storedData,
  tempDir,
  type TestServer,
} from "./support.ts";

const actor = { name: "test", address: null };
const dir = tempDir("latchkey-user-certs-");
afterAll(() => dir.remove());

function openssl(args: string[]): string {
  const p = Bun.spawnSync(["openssl", ...args], { cwd: dir.path, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${p.stderr.toString()}`);
  return p.stdout.toString();
}

const file = (name: string) => readFileSync(join(dir.path, name));
const text = (name: string) => file(name).toString();

/** A key pair (openssl genpkey) and a self-signed certificate for it (openssl req -x509). */
function selfSigned(name: string, algorithm: "rsa" | "p256" | "p384" | "ed25519", days = 30): { key: string; cert: string } {
  const keyArgs = {
    rsa: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    p256: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    p384: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    ed25519: ["-algorithm", "ED25519"],
  }[algorithm];
  openssl(["genpkey", ...keyArgs, "-out", `${name}.key`]);
  openssl(["req", "-x509", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-days", String(days), "-out", `${name}.pem`]);
  return { key: `${name}.key`, cert: `${name}.pem` };
}

/** base64 of the PEM of a certificate's public key: what a sysadm client sends as `pub_key`. */
function pubKeyOf(cert: string): string {
  return Buffer.from(openssl(["x509", "-in", cert, "-noout", "-pubkey"])).toString("base64");
}

/** base64 of the DER SubjectPublicKeyInfo of a certificate's key: the other spelling of `pub_key`. */
function derPubKeyOf(cert: string): string {
  const pem = openssl(["x509", "-in", cert, "-noout", "-pubkey"]);
  return createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64");
}

/** An ECDSA signature in DER as raw r||s (each left-padded to the coordinate size). */
function rawEcdsa(der: Buffer, size: number): Buffer {
  let at = 2 + (der[1]! & 0x80 ? der[1]! & 0x7f : 0);
  const integer = () => {
    const length = der[at + 1]!;
    const value = der.subarray(at + 2, at + 2 + length);
    at += 2 + length;
    const trimmed = value[0] === 0 ? value.subarray(1) : value;
    return Buffer.concat([Buffer.alloc(size - trimmed.length), trimmed]);
  };
  return Buffer.concat([integer(), integer()]);
}

type ProofKind =
  | "rsa-pkcs1"
  | "rsa-pss-digest"
  | "rsa-pss-32"
  | "rsa-pss-max"
  | "rsa-private-encrypt"
  | "ecdsa-p256-der"
  | "ecdsa-p256-raw"
  | "ecdsa-p384-der"
  | "ecdsa-p384-raw"
  | "ed25519";

/** The proof of `testString` by the key in `keyFile`, made by openssl, as base64. */
function prove(kind: ProofKind, keyFile: string, testString: string): string {
  writeFileSync(join(dir.path, "challenge.txt"), testString);
  const sign = (extra: string[]) => openssl(["dgst", "-sha256", "-sign", keyFile, ...extra, "-out", "proof.bin", "challenge.txt"]);
  switch (kind) {
    case "rsa-pkcs1":
    case "ecdsa-p256-der":
    case "ecdsa-p384-der":
      sign([]);
      break;
    case "rsa-pss-digest":
      sign(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"]);
      break;
    case "rsa-pss-32":
      sign(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]);
      break;
    case "rsa-pss-max":
      sign(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:max"]);
      break;
    case "rsa-private-encrypt":
      // The original sysadm form: RSA_private_encrypt of the raw string, PKCS#1 v1.5 padding.
      openssl(["pkeyutl", "-sign", "-inkey", keyFile, "-in", "challenge.txt", "-out", "proof.bin"]);
      break;
    case "ecdsa-p256-raw":
    case "ecdsa-p384-raw":
      sign([]);
      writeFileSync(join(dir.path, "proof.bin"), rawEcdsa(file("proof.bin"), kind === "ecdsa-p256-raw" ? 32 : 48));
      break;
    case "ed25519":
      openssl(["pkeyutl", "-sign", "-rawin", "-inkey", keyFile, "-in", "challenge.txt", "-out", "proof.bin"]);
      break;
  }
  return file("proof.bin").toString("base64");
}

/** A CA-issued user certificate (kind "user", clientAuth) with a fresh key, written to files. */
async function caIssued(server: TestServer, name: string, days = 30): Promise<{ key: string; cert: string; serial: string }> {
  const issued = await server.services.ca.issue(actor, { kind: "user", commonName: name, usages: ["clientAuth"], days, key: "generate" });
  writeFileSync(join(dir.path, `${name}.key`), issued.key!, { mode: 0o600 });
  writeFileSync(join(dir.path, `${name}.pem`), issued.pem);
  return { key: `${name}.key`, cert: `${name}.pem`, serial: issued.certificate.serial };
}

async function mtlsClient(server: TestServer, files: { key: string; cert: string }): Promise<RpcClient> {
  return RpcClient.connect(`wss://localhost:${server.mtlsPort}/ws`, undefined, {
    ca: await server.services.ca.caPem(),
    cert: text(files.cert),
    key: text(files.key),
  });
}

/** Stage 1 then stage 2 on one socket, the proof made by openssl; the stage-2 reply. */
async function certificateLogin(socket: RpcClient, kind: ProofKind, keyFile: string): Promise<any> {
  const stage1 = await socket.request("rpc", "auth_ssl", "");
  expect(stage1.name).toBe("response");
  expect(Object.keys(stage1.args)).toEqual(["test_string"]);
  return socket.request("rpc", "auth_ssl", { encrypted_string: prove(kind, keyFile, stage1.args.test_string) });
}

const UNAUTHORIZED = { code: 401, message: "Unauthorized" };

async function auditOf(server: TestServer, token: string, action: string): Promise<any[]> {
  const res = await call(server.url, "GET", `/api/audit?action=${action}&limit=1000`, { token });
  expect(res.status).toBe(200);
  return res.body.items;
}

async function register(server: TestServer, token: string, username: string, cert: string, extra: Record<string, string> = {}) {
  return call(server.url, "POST", `/api/users/${username}/certificates`, { token, body: { certificate: text(cert), ...extra } });
}

describe("certificate login (rpc/auth_ssl)", () => {
  let server: TestServer;
  let admin: string;
  const keys: Record<"rsa" | "p256" | "p384" | "ed25519", { key: string; cert: string }> = {} as never;
  let aliceCa: { key: string; cert: string; serial: string };

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "alice", password: "alice-password", role: "viewer" });
    for (const algorithm of ["rsa", "p256", "p384", "ed25519"] as const) {
      keys[algorithm] = selfSigned(`alice-${algorithm}`, algorithm);
      // Self-signed: an admin registers them.
      expect((await register(server, admin, "alice", keys[algorithm].cert, { nickname: algorithm })).status).toBe(201);
    }
    aliceCa = await caIssued(server, "alice-ca");
  });
  afterAll(() => server.close());

  const cases: [ProofKind, "rsa" | "p256" | "p384" | "ed25519"][] = [
    ["rsa-pkcs1", "rsa"],
    ["rsa-pss-digest", "rsa"],
    ["rsa-pss-32", "rsa"],
    ["rsa-pss-max", "rsa"],
    ["rsa-private-encrypt", "rsa"],
    ["ecdsa-p256-der", "p256"],
    ["ecdsa-p256-raw", "p256"],
    ["ecdsa-p384-der", "p384"],
    ["ecdsa-p384-raw", "p384"],
    ["ed25519", "ed25519"],
  ];

  test.each(cases)("%s logs in over /ws on the main listener", async (kind, algorithm) => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      const reply = await certificateLogin(socket, kind, keys[algorithm].key);
      expect(reply).toMatchObject({ name: "response", namespace: "rpc" });
      const [token, seconds] = reply.args;
      expect(token).toBeString();
      expect(seconds).toBe(300);
      // The socket is signed in, and the token is a session of alice's like any other.
      expect((await socket.request("rpc", "query", {})).name).toBe("response");
      const session = await call(server.url, "GET", "/api/auth/session", { token });
      expect(session.body).toMatchObject({ username: "alice", role: "viewer" });
    } finally {
      socket.close();
    }
  });

  test.each(cases)("%s logs in over the mutual-TLS listener", async (kind, algorithm) => {
    // The connection presents alice's certificate from latchkey's CA; the login proves another key of hers.
    const socket = await mtlsClient(server, aliceCa);
    try {
      const reply = await certificateLogin(socket, kind, keys[algorithm].key);
      expect(reply.name).toBe("response");
      expect((await call(server.url, "GET", "/api/auth/session", { token: reply.args[0] })).body.username).toBe("alice");
    } finally {
      socket.close();
    }
  });

  test("every login is in the audit log, with the account the key named", async () => {
    const entries = await auditOf(server, admin, "auth.certificate");
    const successes = entries.filter((e) => e.outcome === "success");
    expect(successes.length).toBeGreaterThanOrEqual(2 * cases.length);
    for (const e of successes) expect(e).toMatchObject({ actor: "alice", target: "alice", address: "127.0.0.1" });
  });

  test("a key that is not registered: 401, the seed's envelope, counted against the address", async () => {
    const stranger = selfSigned("stranger", "rsa");
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      const reply = await certificateLogin(socket, "rsa-pkcs1", stranger.key);
      expect(reply).toMatchObject({ name: "error", namespace: "rpc", args: UNAUTHORIZED });
      expect(reply.args).toEqual(UNAUTHORIZED);
      expect((await socket.request("rpc", "query", {})).args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
    const failure = (await auditOf(server, admin, "auth.certificate")).find((e) => e.outcome === "failure");
    expect(failure).toMatchObject({ actor: null, target: null, address: "127.0.0.1", reason: "the proof matches no registered key" });
  });

  test("a proof over another string, or garbage, is refused: 401", async () => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      expect((await socket.request("rpc", "auth_ssl", "")).name).toBe("response");
      const other = prove("rsa-pkcs1", keys.rsa.key, "not the test string");
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: other })).args).toEqual(UNAUTHORIZED);
      expect((await socket.request("rpc", "auth_ssl", "")).name).toBe("response");
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: "AAAA" })).args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
  });

  test("a test string is single use: a replayed proof is refused (401), on the same or another stage 1", async () => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      const stage1 = await socket.request("rpc", "auth_ssl", "");
      const proof = prove("ed25519", keys.ed25519.key, stage1.args.test_string);
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: proof })).name).toBe("response");
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: proof })).args).toEqual(UNAUTHORIZED);
      // A new test string does not revive the old proof.
      expect((await socket.request("rpc", "auth_ssl", "")).name).toBe("response");
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: proof })).args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
  });

  test("a test string is bound to its connection: proved on another one, it is refused (401) and its own still works", async () => {
    const a = await RpcClient.connect(server.wsUrl);
    const b = await RpcClient.connect(server.wsUrl);
    try {
      const forA = (await a.request("rpc", "auth_ssl", "")).args.test_string;
      expect((await b.request("rpc", "auth_ssl", "")).name).toBe("response");
      const proofA = prove("ecdsa-p256-der", keys.p256.key, forA);
      expect((await b.request("rpc", "auth_ssl", { encrypted_string: proofA })).args).toEqual(UNAUTHORIZED);
      // On a socket that asked for none, too.
      const c = await RpcClient.connect(server.wsUrl);
      expect((await c.request("rpc", "auth_ssl", { encrypted_string: proofA })).args).toEqual(UNAUTHORIZED);
      c.close();
      expect((await a.request("rpc", "auth_ssl", { encrypted_string: proofA })).name).toBe("response");
    } finally {
      a.close();
      b.close();
    }
  });

  test("outstanding test strings are capped per address (32, as SCRAM exchanges): past that the address's oldest goes", async () => {
    const sockets = await Promise.all(Array.from({ length: 33 }, () => RpcClient.connect(server.wsUrl)));
    try {
      const strings: string[] = [];
      for (const socket of sockets) strings.push((await socket.request("rpc", "auth_ssl", "")).args.test_string);
      expect(new Set(strings).size).toBe(33);
      const proofOf = (i: number) => ({ encrypted_string: prove("ed25519", keys.ed25519.key, strings[i]!) });
      expect((await sockets[0]!.request("rpc", "auth_ssl", proofOf(0))).args).toEqual(UNAUTHORIZED);
      expect((await sockets[1]!.request("rpc", "auth_ssl", proofOf(1))).name).toBe("response");
      expect((await sockets[32]!.request("rpc", "auth_ssl", proofOf(32))).name).toBe("response");
    } finally {
      for (const socket of sockets) socket.close();
    }
  });

  test("a registration that was revoked no longer signs in: 401", async () => {
    const gone = selfSigned("alice-gone", "p256");
    expect((await register(server, admin, "alice", gone.cert)).status).toBe(201);
    const before = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(before, "ecdsa-p256-raw", gone.key)).name).toBe("response");
    before.close();
    const revoked = await call(server.url, "PUT", "/rpc/settings", {
      token: admin,
      body: { action: "revoke_ssl_cert", pub_key: pubKeyOf(gone.cert), user: "alice" },
    });
    expect(revoked.body.args).toMatchObject({ revoked: true, user: "alice" });
    const after = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(after, "ecdsa-p256-raw", gone.key)).args).toEqual(UNAUTHORIZED);
    after.close();
  });

  test("a certificate of latchkey's CA that the CA revoked no longer signs in (401): its registration is revoked with it", async () => {
    const issued = await caIssued(server, "alice-revoked");
    const alice = await login(server.url, "alice", "alice-password");
    expect((await register(server, alice, "alice", issued.cert)).status).toBe(201);
    const before = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(before, "ecdsa-p256-der", issued.key)).name).toBe("response");
    before.close();
    await server.services.ca.revoke(actor, issued.serial, "keyCompromise");
    const mine = await call(server.url, "GET", "/api/me/certificates", { token: alice });
    expect(mine.body.items.find((c: any) => c.ca_serial === issued.serial)).toMatchObject({
      status: "revoked",
      revoked_by: "ca: keyCompromise",
    });
    const after = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(after, "ecdsa-p256-der", issued.key)).args).toEqual(UNAUTHORIZED);
    after.close();
    // Its registration was revoked with it, so the proof matches no registered key any more.
    const failures = (await auditOf(server, admin, "auth.certificate")).filter((e) => e.outcome === "failure");
    expect(failures[0]).toMatchObject({ actor: null, reason: "the proof matches no registered key" });
  });

  test('stage 1 takes "" only; over the REST mirror the call is refused: it needs the WebSocket', async () => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      for (const args of [null, {}, "x", [], { encrypted_string: "not base64!" }, { encrypted_string: "AAAA", user: "alice" }]) {
        const reply = await socket.request("rpc", "auth_ssl", args);
        expect(reply.args.code).toBe(400);
      }
    } finally {
      socket.close();
    }
    for (const body of ["", { encrypted_string: "AAAA" }]) {
      const res = await call(server.url, "PUT", "/rpc/auth_ssl", { body });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ field: "namespace", message: expect.stringContaining("needs the WebSocket") });
    }
  });
});

describe("the 30 s of a test string, and expired certificates (injected clock)", () => {
  // Ahead of the real time, so that certificates openssl makes during the run are already valid on it.
  const clock = manualClock(Date.now() + 10 * 60_000);
  let server: TestServer;
  let admin: string;

  beforeAll(async () => {
    server = await startTestServer({ clock });
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "carol", password: "carol-password", role: "viewer" });
  });
  afterAll(() => server.close());

  test("a proof sent more than 30 s after stage 1 is refused (401); within 30 s it signs in", async () => {
    const key = selfSigned("carol-late", "ed25519");
    expect((await register(server, admin, "carol", key.cert)).status).toBe(201);
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      let testString = (await socket.request("rpc", "auth_ssl", "")).args.test_string;
      clock.advance(29_000);
      expect((await socket.request("rpc", "auth_ssl", { encrypted_string: prove("ed25519", key.key, testString) })).name).toBe("response");
      testString = (await socket.request("rpc", "auth_ssl", "")).args.test_string;
      clock.advance(30_001);
      const late = await socket.request("rpc", "auth_ssl", { encrypted_string: prove("ed25519", key.key, testString) });
      expect(late.args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
  });

  test("an expired certificate no longer signs in (self-signed and CA-issued alike): 401", async () => {
    const own = selfSigned("carol-short", "p384", 1);
    const issued = await caIssued(server, "carol-ca-short", 1);
    expect((await register(server, admin, "carol", own.cert)).status).toBe(201);
    expect((await register(server, admin, "carol", issued.cert)).status).toBe(201);
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      expect((await certificateLogin(socket, "ecdsa-p384-der", own.key)).name).toBe("response");
      expect((await certificateLogin(socket, "ecdsa-p256-der", issued.key)).name).toBe("response");
      clock.advance(2 * 86_400_000);
      expect((await certificateLogin(socket, "ecdsa-p384-der", own.key)).args).toEqual(UNAUTHORIZED);
      expect((await certificateLogin(socket, "ecdsa-p256-raw", issued.key)).args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
    const reasons = (await auditOf(server, await login(server.url), "auth.certificate"))
      .filter((e) => e.outcome === "failure" && e.actor === "carol")
      .map((e) => e.reason);
    expect(reasons).toEqual(["ecdsa-sha256 proof, but certificate expired", "ecdsa-sha256 proof, but certificate expired"]);
  });
});

describe("throttling", () => {
  let server: TestServer;
  let admin: string;
  let key: { key: string; cert: string };

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "dave", password: "dave-password", role: "viewer" });
    key = selfSigned("dave", "rsa");
    expect((await register(server, admin, "dave", key.cert)).status).toBe(201);
  });
  afterAll(() => server.close());

  test("once a key names the account, the account's throttle holds: a good proof waits while the account must", async () => {
    // A server of its own, on a clock that stands still: the account's wait does not run out under the test.
    const clock = manualClock(Date.now() + 10 * 60_000);
    const own = await startTestServer({ clock });
    try {
      const token = await login(own.url);
      await createUser(own.url, token, { username: "dave", password: "dave-password", role: "viewer" });
      expect((await register(own, token, "dave", key.cert)).status).toBe(201);
      const socket = await RpcClient.connect(own.wsUrl);
      for (let i = 0; i < 5; i++) {
        expect((await socket.request("rpc", "auth", { username: "dave", password: "wrong password" })).args.code).toBe(401);
      }
      const held = await certificateLogin(socket, "rsa-pkcs1", key.key);
      expect(held.args).toMatchObject({ code: 429, retry_after: expect.any(Number) });
      const denied = (await auditOf(own, token, "auth.certificate")).find((e) => e.outcome === "denied");
      expect(denied).toMatchObject({ actor: "dave", reason: "throttled (account)" });
      clock.advance(2_000);
      expect((await certificateLogin(socket, "rsa-pkcs1", key.key)).name).toBe("response");
      socket.close();
    } finally {
      await own.close();
    }
  });

  test("pipelined stage-2 frames are held to the address's limit (20), each counted from its start; then a good proof waits", async () => {
    const socket = await RpcClient.connect(server.wsUrl);
    const other = await RpcClient.connect(server.wsUrl);
    try {
      const testString = (await socket.request("rpc", "auth_ssl", "")).args.test_string;
      const wrong = prove("rsa-pkcs1", key.key, `${testString}-not`);
      // Thirty frames at once, without waiting for any reply.
      const replies = await Promise.all(Array.from({ length: 30 }, () => socket.request("rpc", "auth_ssl", { encrypted_string: wrong })));
      const codes = replies.map((r) => r.args.code);
      expect(codes.filter((c) => c === 401)).toHaveLength(20);
      expect(codes.filter((c) => c === 429)).toHaveLength(10);
      expect(replies.find((r) => r.args.code === 429).args.retry_after).toBeGreaterThan(0);
      // The address must now wait, whatever it proves.
      const stage1 = await other.request("rpc", "auth_ssl", "");
      expect(stage1.args.code).toBe(429);
    } finally {
      socket.close();
      other.close();
    }
    const denied = (await auditOf(server, admin, "auth.certificate")).filter((e) => e.outcome === "denied");
    expect(denied.length).toBeGreaterThanOrEqual(10);
    expect(denied[0].reason).toBe("throttled (address)");
  });
});

describe("rpc/settings and settings/sysadm", () => {
  let server: TestServer;
  let admin: string;
  let erin: string;
  let frank: string;
  let erinCa: { key: string; cert: string; serial: string };

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "erin", password: "erin-password", role: "viewer" });
    await createUser(server.url, admin, { username: "frank", password: "frank-password", role: "viewer" });
    erin = await login(server.url, "erin", "erin-password");
    frank = await login(server.url, "frank", "frank-password");
    erinCa = await caIssued(server, "erin-ca");
  });
  afterAll(() => server.close());

  /** A socket on the mTLS listener with erin's certificate, signed in as erin by password. */
  async function erinOverMtls(): Promise<RpcClient> {
    const socket = await mtlsClient(server, erinCa);
    expect((await socket.request("rpc", "auth", { username: "erin", password: "erin-password" })).name).toBe("response");
    return socket;
  }

  test("register_ssl_cert over mTLS: the pub_key of the connection's own certificate (from latchkey's CA) is registered", async () => {
    const socket = await erinOverMtls();
    try {
      const pubKey = pubKeyOf(erinCa.cert);
      const reply = await socket.request("rpc", "settings", {
        action: "register_ssl_cert",
        pub_key: pubKey,
        nickname: "laptop",
        email: "erin@example.com",
      });
      expect(reply).toMatchObject({ name: "response", args: { registered: true, user: "erin", pub_key: pubKey } });
      // Both spellings of the key name the same key: the DER one is already registered.
      const again = await socket.request("rpc", "settings", { action: "register_ssl_cert", pub_key: derPubKeyOf(erinCa.cert) });
      expect(again.args).toEqual({ code: 409, message: "this key is already registered for erin", field: "pub_key" });
    } finally {
      socket.close();
    }
    // Her certificate now signs her in by itself, on the main listener too.
    const plain = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(plain, "ecdsa-p256-raw", erinCa.key)).name).toBe("response");
    plain.close();
  });

  test("a pub_key that is not the connection's certificate's, or with no certificate on the connection, is refused (400)", async () => {
    const other = selfSigned("erin-other", "rsa");
    const socket = await erinOverMtls();
    try {
      const reply = await socket.request("rpc", "settings", { action: "register_ssl_cert", pub_key: pubKeyOf(other.cert) });
      expect(reply.args).toMatchObject({
        code: 400,
        field: "pub_key",
        message: "does not match the certificate presented on this connection",
      });
    } finally {
      socket.close();
    }
    const plain = await RpcClient.connect(server.wsUrl);
    try {
      expect((await plain.request("rpc", "auth", { username: "erin", password: "erin-password" })).name).toBe("response");
      const reply = await plain.request("rpc", "settings", { action: "register_ssl_cert", pub_key: pubKeyOf(other.cert) });
      expect(reply.args).toMatchObject({ code: 400, field: "pub_key" });
      expect(reply.args.message).toContain("connect to the mutual-TLS listener");
      // A private key is never taken for a public one.
      const privateKey = Buffer.from(text(other.key)).toString("base64");
      const refused = await plain.request("rpc", "settings", { action: "register_ssl_cert", pub_key: privateKey });
      expect(refused.args).toMatchObject({ code: 400, field: "pub_key", message: expect.stringContaining("private key") });
    } finally {
      plain.close();
    }
  });

  test("a viewer may not register a self-signed certificate (403, audited); an admin may, for anyone", async () => {
    const own = selfSigned("erin-self", "ed25519");
    const res = await call(server.url, "PUT", "/rpc/settings", {
      token: erin,
      body: { action: "register_ssl_cert", certificate: text(own.cert) },
    });
    expect(res.status).toBe(403);
    const denied = (await auditOf(server, admin, "user_cert.register")).find((e) => e.outcome === "denied");
    expect(denied).toMatchObject({ actor: "erin", target: "erin" });
    const byAdmin = await call(server.url, "PUT", "/rpc/settings", {
      token: admin,
      body: { action: "register_ssl_cert", certificate: text(own.cert), user: "erin", nickname: "desk" },
    });
    expect(byAdmin.status).toBe(200);
    expect(byAdmin.body.args).toMatchObject({ registered: true, user: "erin" });
  });

  test("list_ssl_certs: by username, then pub_key, with sysadm's text; a viewer sees only their own, an admin everyone's", async () => {
    const frankCert = selfSigned("frank-self", "p256");
    expect((await register(server, admin, "frank", frankCert.cert, { nickname: "frank's", email: "f@example.com" })).status).toBe(201);
    const mine = await call(server.url, "PUT", "/rpc/settings", { token: erin, body: { action: "list_ssl_certs" } });
    expect(Object.keys(mine.body.args)).toEqual(["erin"]);
    const all = await call(server.url, "PUT", "/rpc/settings", { token: admin, body: { action: "list_ssl_certs" } });
    expect(Object.keys(all.body.args).sort()).toEqual(["erin", "frank"]);
    const registered = (await call(server.url, "GET", "/api/user-certificates?username=frank", { token: admin })).body.items[0];
    const date = registered.registered_at.replace(/\.\d{3}Z$/, "Z");
    expect(all.body.args.frank).toEqual({
      [pubKeyOf(frankCert.cert)]: `Nickname: frank's\nEmail: f@example.com\nDate Registered: ${date}`,
    });
    expect(date).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const erinPubKey = pubKeyOf(erinCa.cert);
    expect(all.body.args.erin[erinPubKey]).toMatch(/^Nickname: laptop\nEmail: erin@example.com\nDate Registered: \S+Z$/);
    expect(Object.keys(mine.body.args.erin).sort()).toEqual(Object.keys(all.body.args.erin).sort());
  });

  test("list_ssl_checksums: base64 MD5 of each key as its client sent it", async () => {
    const md5 = (pubKey: string) => createHash("md5").update(Buffer.from(pubKey, "base64")).digest("base64");
    const mine = await call(server.url, "PUT", "/rpc/settings", { token: erin, body: { action: "list_ssl_checksums" } });
    expect(Object.keys(mine.body.args)).toEqual(["md5_keys"]);
    expect(mine.body.args.md5_keys).toContain(md5(pubKeyOf(erinCa.cert)));
    const all = await call(server.url, "PUT", "/rpc/settings", { token: admin, body: { action: "list_ssl_checksums" } });
    expect(all.body.args.md5_keys.length).toBe(mine.body.args.md5_keys.length + 1);
    expect(all.body.args.md5_keys).toContain(md5(pubKeyOf("frank-self.pem")));
  });

  test("a viewer cannot list or revoke another user's certificates (403); an admin can", async () => {
    const frankPubKey = pubKeyOf("frank-self.pem");
    const revoke = { action: "revoke_ssl_cert", pub_key: frankPubKey, user: "frank" };
    expect((await call(server.url, "PUT", "/rpc/settings", { token: erin, body: revoke })).status).toBe(403);
    expect((await call(server.url, "GET", "/api/users/frank/certificates", { token: erin })).status).toBe(403);
    expect((await call(server.url, "GET", "/api/user-certificates", { token: erin })).status).toBe(403);
    expect((await call(server.url, "GET", "/api/users/frank/certificates", { token: admin })).body.total).toBe(1);
    // Without `user`, a revocation is of one's own: erin has no such key.
    expect((await call(server.url, "PUT", "/rpc/settings", { token: erin, body: { ...revoke, user: undefined } })).status).toBe(404);
    const byAdmin = await call(server.url, "PUT", "/settings/sysadm", { token: admin, body: revoke });
    expect(byAdmin.body.args).toMatchObject({ revoked: true, user: "frank", pub_key: frankPubKey });
    expect((await call(server.url, "PUT", "/settings/sysadm", { token: admin, body: revoke })).status).toBe(404);
    const audit = (await auditOf(server, admin, "user_cert.revoke")).find((e) => e.outcome === "success");
    expect(audit).toMatchObject({ actor: "admin", target: "frank" });
    // Frank revokes his own too (a fresh one), with the key's other spelling.
    const again = selfSigned("frank-again", "rsa");
    expect((await register(server, admin, "frank", again.cert)).status).toBe(201);
    const own = await call(server.url, "PUT", "/rpc/settings", {
      token: frank,
      body: { action: "revoke_ssl_cert", pub_key: derPubKeyOf(again.cert) },
    });
    expect(own.body.args).toMatchObject({ revoked: true, user: "frank", pub_key: pubKeyOf(again.cert) });
  });

  test("settings/sysadm answers as rpc/settings; rpc/query lists rpc/settings for every role", async () => {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      expect((await socket.request("rpc", "auth_token", { token: erin })).name).toBe("response");
      const direct = await socket.request("rpc", "settings", { action: "list_ssl_certs" });
      const alias = await socket.request("settings", "sysadm", { action: "list_ssl_certs" });
      expect(alias).toEqual({ ...direct, id: alias.id });
      expect((await socket.request("settings", "sysadm", { action: "nope" })).args.code).toBe(400);
      const query = await socket.request("rpc", "query", {});
      expect(query.args["rpc/settings"]).toBe("read/write");
      expect(query.args["settings/sysadm"]).toBeUndefined();
    } finally {
      socket.close();
    }
  });

  test("the registry refuses an alias that names a call twice", () => {
    const handler = (name: string, aliases?: string[]) =>
      defineHandler({ namespace: "t", name, ...(aliases ? { aliases } : {}), access: "public", args: v.unknown(), handle: () => "ok" });
    expect(() => new Registry([handler("a", ["t/b"]), handler("b")])).toThrow("RPC t/b registered twice");
    const registry = new Registry([handler("a", ["x/y"])]);
    expect(registry.lookup("x", "y")).toBe(registry.lookup("t", "a"));
    expect(registry.entries().map(([k]) => k)).toEqual(["t/a", "x/y"]);
  });
});

describe("REST resources", () => {
  let server: TestServer;
  let admin: string;
  let gina: string;

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    await createUser(server.url, admin, { username: "gina", password: "gina-password", role: "viewer" });
    await createUser(server.url, admin, { username: "hank", password: "hank-password", role: "viewer" });
    gina = await login(server.url, "gina", "gina-password");
  });
  afterAll(() => server.close());

  test("a viewer registers a certificate of latchkey's CA for herself: 201, audited; /api/me/certificates lists it", async () => {
    const issued = await caIssued(server, "gina-ca");
    const res = await register(server, gina, "gina", issued.cert, { nickname: "phone", email: "gina@example.com" });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      username: "gina",
      pub_key: pubKeyOf(issued.cert),
      key_type: "ec-P-256",
      nickname: "phone",
      email: "gina@example.com",
      subject: "gina-ca",
      self_signed: false,
      ca_serial: issued.serial,
      status: "active",
      expired: false,
      registered_by: "gina",
      revoked_at: null,
    });
    expect(res.body.fingerprint).toBe(
      openssl(["x509", "-in", issued.cert, "-noout", "-fingerprint", "-sha256"]).trim().split("=")[1]!.replaceAll(":", "").toLowerCase(),
    );
    expect(res.body.certificate).toBe(text(issued.cert));
    const mine = await call(server.url, "GET", "/api/me/certificates", { token: gina });
    expect(mine.body.total).toBe(1);
    expect(mine.body.items[0].fingerprint).toBe(res.body.fingerprint);
    const audit = (await auditOf(server, admin, "user_cert.register")).find((e) => e.outcome === "success");
    expect(audit).toMatchObject({ actor: "gina", target: "gina", address: "127.0.0.1" });
    expect(audit.reason).toBe(`ec-P-256 issued by this CA, serial ${issued.serial}, fingerprint ${res.body.fingerprint}`);
  });

  test("refused: another user's (403), self-signed by a viewer (403), another CA's or none (400), twice (409)", async () => {
    const issued = await caIssued(server, "gina-ca-2");
    expect((await register(server, gina, "hank", issued.cert)).status).toBe(403);
    const own = selfSigned("gina-self", "rsa");
    expect((await register(server, gina, "gina", own.cert)).status).toBe(403);
    openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "other-ca.key",
      "-subj",
      "/CN=Other CA",
      "-days",
      "30",
      "-out",
      "other-ca.pem",
    ]);
    openssl([
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "foreign.key",
      "-subj",
      "/CN=foreign",
      "-out",
      "foreign.csr",
    ]);
    openssl([
      "x509",
      "-req",
      "-in",
      "foreign.csr",
      "-CA",
      "other-ca.pem",
      "-CAkey",
      "other-ca.key",
      "-CAcreateserial",
      "-days",
      "30",
      "-out",
      "foreign.pem",
    ]);
    const foreign = await register(server, admin, "gina", "foreign.pem");
    expect(foreign.status).toBe(400);
    expect(foreign.body.error).toMatchObject({
      field: "certificate",
      message: expect.stringContaining("neither issued by this server's CA nor self-signed"),
    });
    const junk = await call(server.url, "POST", "/api/users/gina/certificates", {
      token: gina,
      body: { certificate: "not a certificate" },
    });
    expect(junk.status).toBe(400);
    expect(junk.body.error.field).toBe("certificate");
    expect((await register(server, gina, "gina", issued.cert)).status).toBe(201);
    const twice = await register(server, admin, "hank", issued.cert);
    expect(twice.status).toBe(409);
    expect(twice.body.error.message).toBe("this key is already registered");
  });

  test("revoke by fingerprint (either spelling): 200 and revoked; again: 404; another user's as a viewer: 403", async () => {
    const issued = await caIssued(server, "gina-ca-3");
    const created = (await register(server, gina, "gina", issued.cert)).body;
    const colon = created.fingerprint.toUpperCase().replace(/(..)(?=.)/g, "$1:");
    const hankCert = selfSigned("hank-self", "ed25519");
    const hank = (await register(server, admin, "hank", hankCert.cert)).body;
    expect((await call(server.url, "POST", `/api/users/hank/certificates/${hank.fingerprint}/revoke`, { token: gina })).status).toBe(403);
    const revoked = await call(server.url, "POST", `/api/users/gina/certificates/${colon}/revoke`, { token: gina });
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ status: "revoked", revoked_by: "gina" });
    expect((await call(server.url, "POST", `/api/users/gina/certificates/${created.fingerprint}/revoke`, { token: gina })).status).toBe(
      404,
    );
    const active = await call(server.url, "GET", "/api/me/certificates?status=active", { token: gina });
    expect(active.body.items.map((c: any) => c.fingerprint)).not.toContain(created.fingerprint);
    const everyone = await call(server.url, "GET", "/api/user-certificates?status=active", { token: admin });
    expect(everyone.body.items.map((c: any) => c.username).sort()).toEqual(["gina", "gina", "hank"]);
  });

  test("deleting a user deletes their registrations", async () => {
    expect((await call(server.url, "DELETE", "/api/users/hank", { token: admin })).status).toBe(204);
    const left = await server.services.storage.sql.get(
      "SELECT count(*) AS n FROM user_certificates WHERE user_id NOT IN (SELECT id FROM users)",
    );
    expect(left).toEqual({ n: 0 });
    expect(
      (await call(server.url, "GET", "/api/user-certificates", { token: admin })).body.items.map((c: any) => c.username),
    ).not.toContain("hank");
  });

  test("the CLI: user cert add, list and revoke, on the data directory of a running server", async () => {
    const own = selfSigned("gina-cli", "p384");
    const added = await runLatchkey([
      "user",
      "cert",
      "add",
      "gina",
      join(dir.path, own.cert),
      "--nickname",
      "cli",
      "--email",
      "g@example.com",
      ...server.storageArgs,
    ]);
    expect(added).toMatchObject({ code: 0 });
    expect(added.stdout).toContain("registered");
    const listed = await runLatchkey(["user", "cert", "list", "gina", ...server.storageArgs]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain("gina-cli");
    const json = JSON.parse((await runLatchkey(["user", "cert", "list", "--json", ...server.storageArgs])).stdout);
    const entry = json.find((c: any) => c.subject === "gina-cli");
    expect(entry).toMatchObject({ username: "gina", nickname: "cli", self_signed: true, registered_by: expect.stringMatching(/^cli:/) });
    const socket = await RpcClient.connect(server.wsUrl);
    expect((await certificateLogin(socket, "ecdsa-p384-raw", own.key)).name).toBe("response");
    socket.close();
    expect(await runLatchkey(["user", "cert", "revoke", "gina", pubKeyOf(own.cert), ...server.storageArgs])).toMatchObject({
      code: 0,
    });
    const again = await runLatchkey(["user", "cert", "revoke", "gina", entry.fingerprint, ...server.storageArgs]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("no registered certificate");
    expect((await runLatchkey(["user", "cert", "add", "gina", ...server.storageArgs])).code).toBe(2);
    expect((await runLatchkey(["user", "cert", "frobnicate", ...server.storageArgs])).code).toBe(2);
  });
});

describe("issuing user certificates from latchkey's CA", () => {
  let server: TestServer;
  let admin: string;
  let ivy: string;

  beforeAll(async () => {
    server = await startTestServer();
    admin = await login(server.url);
    for (const name of ["ivy", "jack", "kim"]) {
      await createUser(server.url, admin, { username: name, password: `${name}-password`, role: "viewer" });
    }
    ivy = await login(server.url, "ivy", "ivy-password");
  });
  afterAll(() => server.close());

  const issue = (token: string, username: string, body: Record<string, unknown>) =>
    call(server.url, "POST", `/api/users/${username}/certificates/issue`, { token, body });

  /** A key made by openssl and a request for it with the given subject; the files' names. */
  function request(name: string, algorithm: "rsa" | "p256" | "p521" = "p256", subject = `/CN=${name}`): { key: string; csr: string } {
    const keyArgs = {
      rsa: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
      p256: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
      p521: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
    }[algorithm];
    openssl(["genpkey", ...keyArgs, "-out", `${name}.key`]);
    openssl(["req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`]);
    return { key: `${name}.key`, csr: `${name}.csr` };
  }

  /** How many user certificates the CA has issued. */
  async function userCertificatesIssued(): Promise<number> {
    return (await call(server.url, "GET", "/api/certs?kind=user&limit=1", { token: admin })).body.total;
  }

  /** Valid from now (the CA backdates the start a little, for clocks behind) for `days` days. */
  function expectValidFor(certificate: { not_before: string; not_after: string }, days: number): void {
    expect(Date.parse(certificate.not_before)).toBeLessThanOrEqual(Date.now());
    expect(Math.abs(Date.parse(certificate.not_after) - (Date.now() + days * 86_400_000))).toBeLessThan(60_000);
  }

  async function signsInAs(kind: ProofKind, keyFile: string): Promise<string | null> {
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      const reply = await certificateLogin(socket, kind, keyFile);
      if (reply.name !== "response") return null;
      return (await call(server.url, "GET", "/api/auth/session", { token: reply.args[0] })).body.username;
    } finally {
      socket.close();
    }
  }

  test("an admin issues one with a generated key: 201; kind user, CN = the user, clientAuth only; it signs in at once", async () => {
    const res = await issue(admin, "ivy", { days: 30, nickname: "laptop", email: "ivy@example.com" });
    expect(res.status).toBe(201);
    const issued = res.body;
    expect(issued).toMatchObject({
      username: "ivy",
      subject: "ivy",
      key_type: "ec-P-256",
      nickname: "laptop",
      email: "ivy@example.com",
      self_signed: false,
      status: "active",
      registered_by: "admin",
      ca: (await call(server.url, "GET", "/api/ca.pem")).text,
    });
    expect(issued.key).toStartWith("-----BEGIN PRIVATE KEY-----\n");
    writeFileSync(join(dir.path, "ivy-issued.pem"), issued.certificate);
    writeFileSync(join(dir.path, "ivy-issued.key"), issued.key, { mode: 0o600 });
    writeFileSync(join(dir.path, "ivy-root.pem"), issued.ca);
    // openssl agrees: the root's, for ivy, client authentication only, 30 days, the key's.
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", "ivy-root.pem", "ivy-issued.pem"])).toBe("ivy-issued.pem: OK\n");
    const textForm = openssl(["x509", "-in", "ivy-issued.pem", "-noout", "-text"]);
    expect(textForm).toContain("Subject: CN = ivy\n");
    expect(textForm).toContain("TLS Web Client Authentication");
    expect(textForm).not.toContain("TLS Web Server Authentication");
    expectValidFor(issued, 30);
    expect(openssl(["pkey", "-in", "ivy-issued.key", "-pubout"])).toBe(openssl(["x509", "-in", "ivy-issued.pem", "-noout", "-pubkey"]));
    const inCa = await call(server.url, "GET", `/api/certs/${issued.ca_serial}`, { token: admin });
    expect(inCa.body).toMatchObject({ kind: "user", common_name: "ivy", usages: ["clientAuth"], status: "valid" });
    // Registered: listed as hers, and the key signs her in over the WebSocket.
    const hers = await call(server.url, "GET", "/api/me/certificates", { token: ivy });
    expect(hers.body.items.map((c: any) => c.fingerprint)).toEqual([issued.fingerprint]);
    // The key was in the issuing reply only: no other answer carries it.
    const keyBase64 = issued.key.split("\n")[1]!;
    for (const reply of [hers, inCa]) expect(reply.text).not.toContain(keyBase64);
    expect(await signsInAs("ecdsa-p256-der", "ivy-issued.key")).toBe("ivy");
    // The key is kept nowhere: not in the database (its rows, or its files and WAL) or any other file of the data directory.
    const keyDer = createPrivateKey(issued.key).export({ type: "pkcs8", format: "der" });
    const stored = await storedData(server);
    // The certificate is there (so the search finds what is stored), the key is not.
    expect(stored.includes(new X509Certificate(issued.certificate).raw)).toBe(true);
    expect(stored.includes(keyDer)).toBe(false);
    expect(stored.includes(Buffer.from(issued.key.split("\n")[1]!))).toBe(false);
    const audit = (await auditOf(server, admin, "user_cert.issue")).find((e) => e.outcome === "success");
    expect(audit).toMatchObject({ actor: "admin", target: "ivy", address: "127.0.0.1" });
    expect(audit.reason).toBe(`ec-P-256 key generated here, serial ${issued.ca_serial}, 30 days, fingerprint ${issued.fingerprint}`);
  });

  test("a viewer issues her own from a request: its key, CN her name whatever its subject, 365 days; no key in the reply", async () => {
    const own = request("ivy-own", "rsa", "/CN=someone-else/O=Elsewhere");
    const res = await issue(ivy, "ivy", { csr: text(own.csr), nickname: "desk" });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ username: "ivy", subject: "ivy", key_type: "rsa-2048", registered_by: "ivy", nickname: "desk" });
    expect(res.body.key).toBeUndefined();
    expectValidFor(res.body, 365);
    writeFileSync(join(dir.path, "ivy-own.pem"), res.body.certificate);
    writeFileSync(join(dir.path, "ivy-own-root.pem"), res.body.ca);
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", "ivy-own-root.pem", "ivy-own.pem"])).toBe("ivy-own.pem: OK\n");
    expect(openssl(["x509", "-in", "ivy-own.pem", "-noout", "-subject"])).toBe("subject=CN = ivy\n");
    expect(pubKeyOf("ivy-own.pem")).toBe(Buffer.from(openssl(["pkey", "-in", own.key, "-pubout"])).toString("base64"));
    expect(res.body.pub_key).toBe(pubKeyOf("ivy-own.pem"));
    for (const kind of ["rsa-pkcs1", "rsa-private-encrypt"] as const) expect(await signsInAs(kind, own.key)).toBe("ivy");
    const audit = (await auditOf(server, admin, "user_cert.issue")).find((e) => e.actor === "ivy" && e.outcome === "success");
    expect(audit.reason).toStartWith("rsa-2048 key from a certificate request, serial ");
  });

  test("refused, nothing issued: anonymous 401; others' or a viewer's generated key 403; bad csr or days 400; key taken 409", async () => {
    const before = await userCertificatesIssued();
    const own = request("ivy-refused");
    // Without a session: 401, before anything else.
    const anonymous = await call(server.url, "POST", "/api/users/ivy/certificates/issue", { body: { csr: text(own.csr) } });
    expect(anonymous.status).toBe(401);
    // Another user's, with a request or without: 403, audited as denied.
    expect((await issue(ivy, "jack", { csr: text(own.csr) })).status).toBe(403);
    const generated = await issue(ivy, "ivy", {});
    expect(generated.status).toBe(403);
    expect(generated.body.error).toMatchObject({
      code: "forbidden",
      field: "csr",
      message: expect.stringContaining("certificate request"),
    });
    const denied = (await auditOf(server, admin, "user_cert.issue")).filter((e) => e.outcome === "denied");
    expect(denied.map((e) => [e.actor, e.target])).toEqual([
      ["ivy", "ivy"],
      ["ivy", "jack"],
    ]);
    // A request that is none, one whose signature does not verify, one for a P-521 key (no certificate login with it).
    const malformed = await issue(ivy, "ivy", { csr: "hello" });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toMatchObject({ field: "csr", message: expect.stringContaining("must be one PEM certificate request") });
    openssl(["req", "-in", own.csr, "-outform", "DER", "-out", "tampered.der"]);
    const der = file("tampered.der");
    const at = der.indexOf("ivy-refused");
    der[at] = "J".charCodeAt(0);
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    const forged = await issue(ivy, "ivy", { csr: tampered });
    expect(forged.status).toBe(400);
    expect(forged.body.error).toMatchObject({ field: "csr", message: expect.stringContaining("signature does not verify") });
    const p521 = await issue(admin, "ivy", { csr: text(request("ivy-p521", "p521").csr) });
    expect(p521.body.error).toMatchObject({ field: "csr", message: expect.stringContaining("P-521") });
    // Days out of range or not whole.
    for (const days of [0, 3651, 1.5, -1, "30", "x"]) {
      const res = await issue(admin, "ivy", { days });
      expect(res.status).toBe(400);
      expect(res.body.error).toMatchObject({ field: "days", message: expect.stringContaining("must be a whole number from 1 to 3650") });
    }
    // A key already registered (for anyone): 409.
    const taken = await issue(admin, "jack", { csr: text("ivy-own.csr") });
    expect(taken.status).toBe(409);
    expect(taken.body.error).toEqual({ code: "conflict", field: "csr", message: "this key is already registered" });
    expect((await issue(ivy, "ivy", { csr: text("ivy-own.csr") })).body.error.message).toBe("this key is already registered for ivy");
    expect((await issue(admin, "nobody-here", {})).status).toBe(404);
    expect(await userCertificatesIssued()).toBe(before);
  });

  test("the request the refusal suggests (openssl req, EC P-256) gets a certificate: listed by list_ssl_certs and /api/certs", async () => {
    // The command in the 403 a viewer gets without a request, run as it is written.
    const refusal = (await issue(ivy, "ivy", {})).body.error.message as string;
    const command = refusal.slice(refusal.indexOf("openssl req ")).split(" ");
    expect(command.slice(0, 3)).toEqual(["openssl", "req", "-new"]);
    openssl(command.slice(1));
    const res = await issue(ivy, "ivy", { csr: text("me.csr"), days: 7 });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ username: "ivy", subject: "ivy", key_type: "ec-P-256", self_signed: false, status: "active" });
    expect(res.body.key).toBeUndefined();
    expectValidFor(res.body, 7);
    writeFileSync(join(dir.path, "ivy-me.pem"), res.body.certificate);
    writeFileSync(join(dir.path, "rootCA.pem"), res.body.ca);
    expect(openssl(["verify", "-purpose", "sslclient", "-CAfile", "rootCA.pem", "ivy-me.pem"])).toBe("ivy-me.pem: OK\n");
    expect(openssl(["x509", "-in", "ivy-me.pem", "-noout", "-pubkey"])).toBe(openssl(["pkey", "-in", "me.key", "-pubout"]));
    expect(await signsInAs("ecdsa-p256-raw", "me.key")).toBe("ivy");
    // sysadm's list names it by the key, for her and for an admin.
    const date = res.body.registered_at.replace(/\.\d{3}Z$/, "Z");
    for (const token of [ivy, admin]) {
      const listed = await call(server.url, "PUT", "/rpc/settings", { token, body: { action: "list_ssl_certs" } });
      expect(listed.body.args.ivy[pubKeyOf("ivy-me.pem")]).toBe(`Nickname: \nEmail: \nDate Registered: ${date}`);
    }
    // The CA lists it among its certificates, of kind user, valid.
    const ca = await call(server.url, "GET", "/api/certs?kind=user&status=valid&limit=1000", { token: admin });
    expect(ca.body.items.find((c: any) => c.serial === res.body.ca_serial)).toMatchObject({
      kind: "user",
      common_name: "ivy",
      fingerprint: res.body.fingerprint,
      usages: ["clientAuth"],
    });
  });

  test("one request issued three times at once: one registration (409 for the others); the CA revokes the other certificates", async () => {
    await createUser(server.url, admin, { username: "lee", password: "lee-password", role: "viewer" });
    const own = request("lee-race");
    // Three callers in the same tick, through the core (over HTTP the requests may arrive one after
    // another): each checks the key before any registers it, since the CA signs asynchronously.
    const settled = await Promise.allSettled(
      [0, 1, 2].map(() => server.services.userCertificates.issue(actor, null, { username: "lee", csr: text(own.csr) })),
    );
    const won = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const lost = settled.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
    expect(won).toHaveLength(1);
    expect(lost.map((e) => [e.status, e.code, e.field, e.message])).toEqual([
      [409, "conflict", "csr", "this key is already registered for lee"],
      [409, "conflict", "csr", "this key is already registered for lee"],
    ]);
    // The CA issued three; only the registered one is valid, the others were revoked at once.
    const lees = (await call(server.url, "GET", "/api/certs?kind=user&limit=1000", { token: admin })).body.items.filter(
      (c: any) => c.common_name === "lee",
    );
    expect(lees).toHaveLength(3);
    expect(lees.filter((c: any) => c.status === "valid").map((c: any) => c.serial)).toEqual([won[0]!.ca_serial]);
    for (const c of lees.filter((c: any) => c.serial !== won[0]!.ca_serial)) {
      expect(c).toMatchObject({ status: "revoked", revocation_reason: "cessationOfOperation" });
    }
    expect((await call(server.url, "GET", "/api/users/lee/certificates", { token: admin })).body.total).toBe(1);
    const failures = (await auditOf(server, admin, "user_cert.issue")).filter((e) => e.target === "lee" && e.outcome === "failure");
    expect(failures.map((e) => e.reason)).toEqual([
      "csr: this key is already registered for lee",
      "csr: this key is already registered for lee",
    ]);
    expect(await signsInAs("ecdsa-p256-der", own.key)).toBe("lee");
  });

  test("an issued certificate revoked at the CA (/api/certs/{serial}/revoke) no longer signs in (401), nor registers again", async () => {
    const issued = (await issue(admin, "jack", { days: 30 })).body;
    writeFileSync(join(dir.path, "jack-issued.key"), issued.key, { mode: 0o600 });
    writeFileSync(join(dir.path, "jack-issued.pem"), issued.certificate);
    expect(await signsInAs("ecdsa-p256-der", "jack-issued.key")).toBe("jack");
    const revoked = await call(server.url, "POST", `/api/certs/${issued.ca_serial}/revoke`, {
      token: admin,
      body: { reason: "keyCompromise" },
    });
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ serial: issued.ca_serial, status: "revoked", revocation_reason: "keyCompromise" });
    // The registration is revoked with it (in the database, whichever process revoked it).
    const listed = await call(server.url, "GET", "/api/users/jack/certificates", { token: admin });
    expect(listed.body.items.find((c: any) => c.ca_serial === issued.ca_serial)).toMatchObject({
      status: "revoked",
      revoked_by: "ca: keyCompromise",
    });
    const socket = await RpcClient.connect(server.wsUrl);
    try {
      expect((await certificateLogin(socket, "ecdsa-p256-der", "jack-issued.key")).args).toEqual(UNAUTHORIZED);
    } finally {
      socket.close();
    }
    const failures = (await auditOf(server, admin, "auth.certificate")).filter((e) => e.outcome === "failure");
    expect(failures[0]).toMatchObject({ actor: null, reason: "the proof matches no registered key" });
    // The CRL lists it, and registering it again (for anyone) is refused by what the CA says.
    writeFileSync(join(dir.path, "issuing.crl"), (await call(server.url, "GET", "/api/crl?format=pem")).text);
    expect(openssl(["crl", "-in", "issuing.crl", "-noout", "-text"])).toContain(`Serial Number: ${issued.ca_serial.toUpperCase()}`);
    const again = await register(server, admin, "kim", "jack-issued.pem");
    expect(again.status).toBe(400);
    expect(again.body.error).toEqual({
      code: "bad_request",
      field: "certificate",
      message: "was issued by this server's CA but is refused (revoked)",
    });
  });

  test("a certificate of the CA for a machine (client, host, server) is refused for user login: 400 naming certificate", async () => {
    const client = await server.services.ca.issue(actor, {
      kind: "client",
      commonName: "machine.example",
      usages: ["clientAuth"],
      days: 30,
      key: "generate",
    });
    const listener = await server.services.ca.issue(actor, {
      kind: "server",
      commonName: "listener.example",
      usages: ["serverAuth", "clientAuth"],
      days: 30,
      key: "generate",
    });
    expect((await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: "woodstock.example" } })).status).toBe(201);
    const host = await call(server.url, "POST", "/api/hosts/woodstock.example/bundle", { token: admin });
    expect(host.status).toBe(201);
    for (const [kind, pem] of [
      ["client", client.pem],
      ["host", host.body.certificate],
      ["server", listener.pem],
    ] as const) {
      const res = await call(server.url, "POST", "/api/users/ivy/certificates", { token: admin, body: { certificate: pem } });
      expect(res.status).toBe(400);
      expect(res.body.error.field).toBe("certificate");
      expect(res.body.error.message).toContain(`(kind ${kind}), not to a user`);
      expect(res.body.error.message).toContain("issue a user certificate instead");
    }
    // The sysadm call says the same.
    const rpc = await call(server.url, "PUT", "/rpc/settings", {
      token: admin,
      body: { action: "register_ssl_cert", certificate: client.pem, user: "ivy" },
    });
    expect(rpc.status).toBe(400);
    expect(rpc.body.error).toMatchObject({ field: "certificate", message: expect.stringContaining("issue a user certificate instead") });
  });

  test("the CLI: user cert issue writes NAME.pem, rootCA.pem and NAME.key (0600), refuses to replace files; the key signs in", async () => {
    const out = join(dir.path, "cli-out");
    const cli = (args: string[]) => runLatchkey(["user", "cert", "issue", ...args, ...server.storageArgs]);
    const generated = await cli(["kim", "--out", out, "--days", "10", "--nickname", "cli", "--email", "kim@example.com"]);
    expect(generated).toMatchObject({ code: 0, stderr: "" });
    expect(generated.stdout).toContain(`wrote ${join(out, "kim.key")} (0600`);
    expect(generated.stdout).toContain(`wrote ${join(out, "kim.pem")}\n`);
    expect(generated.stdout).toContain(`wrote ${join(out, "rootCA.pem")}\n`);
    expect(statSync(join(out, "kim.key")).mode & 0o777).toBe(0o600);
    expect(statSync(out).mode & 0o777).toBe(0o700);
    expect(text("cli-out/rootCA.pem")).toBe((await call(server.url, "GET", "/api/ca.pem")).text);
    expect(openssl(["verify", "-CAfile", "cli-out/rootCA.pem", "cli-out/kim.pem"])).toBe("cli-out/kim.pem: OK\n");
    expect(openssl(["x509", "-in", "cli-out/kim.pem", "-noout", "-subject"])).toBe("subject=CN = kim\n");
    const kims = (await call(server.url, "GET", "/api/users/kim/certificates", { token: admin })).body.items;
    expect(kims).toMatchObject([
      { subject: "kim", nickname: "cli", email: "kim@example.com", registered_by: expect.stringMatching(/^cli:/) },
    ]);
    expectValidFor(kims[0], 10);
    expect(generated.stdout).toContain(kims[0].fingerprint);
    expect(await signsInAs("ecdsa-p256-raw", "cli-out/kim.key")).toBe("kim");

    // Nothing is replaced, and nothing is issued when something would be.
    const before = await userCertificatesIssued();
    const again = await cli(["kim", "--out", out]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(
      `${join(out, "kim.pem")}, ${join(out, "kim.key")} already exist; move them away, or choose another --out DIR`,
    );
    // With a request, into a directory that holds the user's own key (kept) and the same root (left as it is).
    const withCsr = join(dir.path, "cli-csr");
    mkdirSync(withCsr);
    const own = request("cli-csr/kim", "p256", "/CN=kim");
    copyFileSync(join(out, "rootCA.pem"), join(withCsr, "rootCA.pem"));
    const ownKey = text(own.key);
    const fromCsr = await cli(["kim", "--csr", join(dir.path, own.csr), "--out", withCsr]);
    expect(fromCsr).toMatchObject({ code: 0, stderr: "" });
    expect(fromCsr.stdout).not.toContain("kim.key");
    expect(text(own.key)).toBe(ownKey);
    expect(openssl(["x509", "-in", "cli-csr/kim.pem", "-noout", "-pubkey"])).toBe(openssl(["pkey", "-in", own.key, "-pubout"]));
    expect(await signsInAs("ecdsa-p256-der", own.key)).toBe("kim");
    expect(await userCertificatesIssued()).toBe(before + 1);

    // A rootCA.pem of something else is not replaced either.
    const other = join(dir.path, "cli-other");
    mkdirSync(other);
    writeFileSync(join(other, "rootCA.pem"), "not this root\n");
    const foreignRoot = await cli(["kim", "--out", other]);
    expect(foreignRoot.code).toBe(2);
    expect(foreignRoot.stderr).toContain(`${join(other, "rootCA.pem")} already exists; move it away, or choose another --out DIR`);
    expect(existsSync(join(other, "kim.key"))).toBe(false);
    // Bad input: days, a missing or broken request, no such user, another subcommand's flag.
    expect((await cli(["kim", "--days", "0", "--out", other])).code).toBe(2);
    expect((await cli(["kim", "--days", "3651", "--out", other])).stderr).toContain("--days must be a whole number from 1 to 3650");
    expect((await cli(["kim", "--csr", join(dir.path, "no-such.csr"), "--out", other])).code).toBe(2);
    writeFileSync(join(dir.path, "broken.csr"), "hello\n");
    const broken = await cli(["kim", "--csr", join(dir.path, "broken.csr"), "--out", join(dir.path, "cli-broken")]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain(`${join(dir.path, "broken.csr")}: must be one PEM certificate request`);
    expect((await cli(["nobody-here", "--out", join(dir.path, "cli-nobody")])).stderr).toContain(`no user named "nobody-here"`);
    expect(existsSync(join(dir.path, "cli-nobody"))).toBe(false);
    expect((await cli(["kim", "--json"])).code).toBe(2);
    expect(await userCertificatesIssued()).toBe(before + 1);
    const help = await runLatchkey(["user", "cert", "--help"]);
    expect(help.stdout).toContain("latchkey user cert issue NAME [--csr FILE] [--days N] [--out DIR] [--nickname N] [--email E]");
  });
});
