/**
 * Bad input against every REST route (src/http/access.ts) and every RPC in the registry:
 * malformed JSON, wrong types, missing and unknown fields, oversized bodies, hostile strings,
 * query-string garbage and broken Authorization headers. Every answer is a 4xx JSON error
 * `{"error": {"code", "message", "field"?}}` naming the field where there is one, never a 500,
 * and the server answers /healthz after each case. A route or RPC without cases here fails.
 * The seed's public licensing calls (activate, check, deactivate) answer in the seed's own
 * shape `{"result": "failure", "error", "field"?}` and ignore fields they do not know, as seed
 * clients may send more.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, createUser, login, RpcClient, startTestServer, type TestServer } from "./support.ts";

let server: TestServer;
let admin: string;
let counter = 0;
/** A fresh, valid username for cases that may succeed in creating an account. */
const fresh = () => `bad-input-${++counter}`;

/**
 * Licensing fixtures, made in beforeAll on the fresh server, so their ids are known up front:
 * application 1; license 1 (unlimited) is activated by the activate cases, license 2 is
 * activated on HWID for the check cases, license 3 has no activation (deactivate answers 404),
 * license 4 is what the PATCH cases change.
 */
const APP_ID = 1;
const HWID = "bad-input-hwid";
const PATCHED_LICENSE = 4;
const licenseTokens: string[] = [];
const licenseToken = (id: number) => licenseTokens[id - 1] ?? "NOT-YET-CREATED";

/**
 * Enrollment fixtures, made in beforeAll: keys 1 to 3 (key 2 is what the revoke cases revoke,
 * key 3 what the reset cases reset), and one client registered (and gone) with CLIENT_UUID.
 * require_auth_key stays off: the settings cases only ever set it to false.
 */
const CLIENT_UUID = "0b5e1c7a-1d2e-4f3a-8b9c-0123456789ab";
const NO_CLIENT_UUID = "ffffffff-ffff-4fff-bfff-ffffffffffff";
const registration = () => ({ uuid: CLIENT_UUID, name: "bad-input client", hostname: "bad-input.example", version: "1.0", os: "linux" });
/** A certificate request of that client's hostname, made by openssl (the key goes nowhere). */
const CLIENT_CSR = Bun.spawnSync(
  ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null"].concat([
    "-subj",
    "/CN=bad-input.example",
  ]),
).stdout.toString();

/**
 * Host and certificate fixtures, made in beforeAll: HOST is registered (group g1) and holds a
 * bundle's certificate, `hostSerial`. Revocations and removals name what does not exist (NO_SERIAL,
 * NO_HOST), so that every case finds the same state.
 */
const HOST = "bad-input-host.example";
const NO_HOST = "no-such-host.example";
const NO_SERIAL = "00ff";
let hostSerial = "";
/** A fresh, valid hostname for cases that may register a host. */
const freshHost = () => `${fresh()}.example`;

/**
 * User certificate fixtures: SELF_SIGNED (made by openssl) is registered for bad-target in
 * beforeAll, so that registering it again is a 409 whoever asks, and so is issuing a certificate
 * for REGISTERED_KEY_CSR, a request for its key (refused before the CA signs anything);
 * UNREGISTERED_PUB_KEY (base64 of a PEM public key, as sysadm spells pub_key) is registered for
 * nobody, so that revoking it is a 404. NO_FINGERPRINT names no registration.
 */
const SELF_SIGNED_KEY = Bun.spawnSync(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]).stdout;
const SELF_SIGNED = Bun.spawnSync(["openssl", "req", "-x509", "-key", "/dev/stdin", "-subj", "/CN=bad-input", "-days", "30"], {
  stdin: SELF_SIGNED_KEY,
}).stdout.toString();
const REGISTERED_KEY_CSR = Bun.spawnSync(["openssl", "req", "-new", "-key", "/dev/stdin", "-subj", "/CN=bad-input"], {
  stdin: SELF_SIGNED_KEY,
}).stdout.toString();
const UNREGISTERED_PUB_KEY = Buffer.from(
  Bun.spawnSync(["sh", "-c", "openssl genpkey -algorithm ED25519 | openssl pkey -pubout"]).stdout,
).toString("base64");
const NO_FINGERPRINT = "00".repeat(32);

const HOSTILE = {
  traversal: "../../etc/passwd",
  script: "<script>alert(1)</script>",
  sql: "' OR 1=1 --",
  nul: "nul\u0000byte-in-the-middle",
  long: "x".repeat(10_000),
  rtl: "\u202Etxt.exe-looks-like",
  emoji: "🔑🔥😀 keys",
  crlf: "line\r\nSet-Cookie: injected=1",
} satisfies Record<string, string>;
type Hostile = keyof typeof HOSTILE;

type Res = Awaited<ReturnType<typeof call>>;

/**
 * "api": the one error shape `{error: {code, message, field?}}`. "wire": the seed's licensing
 * calls, `{result: "failure", error, field?}` (plus the seed's support_message on refusals).
 */
type Shape = "api" | "wire";

/** A 4xx in the route's error shape, naming the field when one is given, and the server still up. */
async function expectClientError(res: Res, status: number | number[], field?: string | string[], shape: Shape = "api"): Promise<void> {
  const statuses = Array.isArray(status) ? status : [status];
  // Shows the reply when the status is not one of those expected.
  expect({ status: res.status, text: res.text.slice(0, 300) }).toMatchObject({
    status: statuses.includes(res.status) ? res.status : statuses[0],
  });
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(res.headers.get("content-type")).toStartWith("application/json");
  let error: { message: string; field?: string };
  if (shape === "wire") {
    expect(res.body.result).toBe("failure");
    expect(Object.keys(res.body).every((k) => ["result", "error", "field", "support_message", "retry_after"].includes(k))).toBe(true);
    error = { message: res.body.error, ...(res.body.field === undefined ? {} : { field: res.body.field }) };
  } else {
    expect(Object.keys(res.body)).toEqual(["error"]);
    error = res.body.error;
    expect(Object.keys(error).every((k) => ["code", "message", "field", "retry_after"].includes(k))).toBe(true);
    expect(res.body.error.code).toMatch(/^[a-z_]+$/);
  }
  expect(error.message).toBeString();
  expect(error.message.length).toBeGreaterThan(0);
  // Nothing internal leaks: no stack frames, no SQL.
  expect(error.message).not.toMatch(/\.ts:\d+|SQLITE|at async/);
  if (field !== undefined) expect<(string | undefined)[]>(Array.isArray(field) ? field : [field]).toContain(error.field);
  await expectAlive();
}

async function expectAlive(): Promise<void> {
  const health = await call(server.url, "GET", "/healthz");
  expect(health.status).toBe(200);
}

beforeAll(async () => {
  server = await startTestServer();
  admin = await login(server.url);
  await createUser(server.url, admin, { username: "bad-target", password: "target-password" });
  const app = await call(server.url, "POST", "/api/apps", { token: admin, body: { name: "bad-input app", support_message: "call us" } });
  expect(app.body.id).toBe(APP_ID);
  for (let id = 1; id <= 4; id++) {
    const license = await call(server.url, "POST", "/api/licenses", { token: admin, body: { app_id: APP_ID, activations: -1 } });
    expect(license.body.id).toBe(id);
    licenseTokens.push(license.body.token);
  }
  const activated = await call(server.url, "POST", "/api/activate", { body: { token: licenseToken(2), hwid: HWID } });
  expect(activated.status).toBe(201);
  const keys = await call(server.url, "POST", "/api/keys", { token: admin, body: { quantity: 3, label: "bad-input fixtures" } });
  expect(keys.body.items.map((k: { id: number }) => k.id).sort()).toEqual([1, 2, 3]);
  const client = await RpcClient.connect(server.wsUrl);
  expect((await client.request("client", "register", registration())).name).toBe("response");
  client.close();
  await client.closed;
  expect((await call(server.url, "POST", "/api/hosts", { token: admin, body: { hostname: HOST, group: "g1" } })).status).toBe(201);
  const bundle = await call(server.url, "POST", `/api/hosts/${HOST}/bundle`, { token: admin });
  expect(bundle.status).toBe(201);
  hostSerial = bundle.body.serial;
  const registered = await call(server.url, "POST", "/api/users/bad-target/certificates", {
    token: admin,
    body: { certificate: SELF_SIGNED },
  });
  expect(registered.status).toBe(201);
});
afterAll(() => server.close());

// ---------------------------------------------------------------------------------------------
// Field kinds: what a field of each kind must answer to wrong types and hostile strings.

type Kind =
  | "username"
  | "password"
  | "loginPassword"
  | "role"
  | "groups"
  | "boolean"
  | "nonce"
  | "response"
  | "scramFirst"
  | "scramFinal"
  | "token"
  | "filter"
  | "outcome"
  | "timestamp"
  | "limit"
  | "offset"
  | "id"
  | "appName"
  | "text1000"
  | "activations"
  | "nullableTimestamp"
  | "hwid"
  | "wireToken"
  | "wireId"
  | "wireText"
  | "wireNonce"
  | "quantity"
  | "keyLabel"
  | "group"
  | "keyStatus"
  | "clientStatus"
  | "uuid"
  | "clientName"
  | "hostname"
  | "clientText"
  | "authKey"
  | "certKind"
  | "certStatus"
  | "serial"
  | "revocationReason"
  | "pubKey"
  | "proof"
  | "pem"
  | "nickname"
  | "email"
  | "csr"
  | "days";

const WRONG_TYPES: Record<Kind, unknown[]> = {
  username: [42, true, null, {}, ["admin"]],
  password: [12345678, true, null, {}, ["password1"]],
  loginPassword: [12345678, false, null, {}, ["password1"]],
  role: [1, true, null, {}, ["admin"], "Admin", "root", ""],
  groups: ["g1", 42, null, {}, [42], [null], [["g"]], Array.from({ length: 257 }, (_, i) => `g${i}`)],
  boolean: ["true", 1, 0, null, {}, []],
  nonce: [1, null, {}, "0123", "Z".repeat(32)],
  response: [1, null, {}, "abc", "g".repeat(64)],
  scramFirst: [1, null, {}, ["n,,n=a,r=b"]],
  scramFinal: [1, null, {}, ["c=biws"]],
  token: [1, null, {}, [], ""],
  filter: [1, null, {}, ["x"]],
  outcome: [1, null, "ok", "SUCCESS", ""],
  timestamp: [1, null, "yesterday", "2026-13-45T99:99:99Z", "0"],
  limit: ["1", true, null, {}, [1], 1.5, -1, 0, 1001, 1e9],
  offset: ["1", true, null, {}, [1], 1.5, -1, -0.5, Infinity],
  id: ["1", true, null, {}, [1], 1.5, 0, -1],
  appName: [1, true, null, {}, ["app"], "", "   "],
  text1000: [1, true, null, {}, ["text"]],
  activations: ["1", true, null, {}, [1], 1.5, -2, 1_000_001],
  nullableTimestamp: [1, "yesterday", "2026-13-45T99:99:99Z", "0", {}, [], "2030-02-30"],
  hwid: [1, true, null, {}, [], ""],
  // The public licensing calls read JSON, forms and query strings: "" counts as absent there.
  wireToken: [1, true, null, {}, [], "", "   "],
  wireId: [true, null, {}, [], 1.5, 0, -1, "abc", "1.5", "0x10", "-3"],
  wireText: [1, true, null, {}, []],
  wireNonce: [1, true, null, {}, []],
  quantity: ["1", true, null, {}, [1], 1.5, 0, 101, -1, 1e9],
  keyLabel: [1, true, null, {}, ["label"], "x".repeat(101)],
  group: [1, true, null, {}, ["g"], "", " leading-space", "-dash-first", "g".repeat(65)],
  keyStatus: [1, true, null, {}, [], "", "PENDING", "expired"],
  clientStatus: [1, true, null, {}, [], "", "ONLINE", "gone"],
  uuid: [1, true, null, {}, [], "", "not-a-uuid", "0b5e1c7a1d2e4f3a8b9c0123456789ab", `${CLIENT_UUID}0`],
  clientName: [1, true, null, {}, ["n"], "", "   ", "n".repeat(65)],
  hostname: [1, true, null, {}, [], "", "-leading.example", "a..b", "under_score.example", `${"h".repeat(64)}.example`],
  clientText: [1, true, null, {}, [], "v".repeat(65)],
  authKey: [1, true, null, {}, [], "K".repeat(65)],
  certKind: [1, true, null, {}, [], "", "HOST", "root"],
  certStatus: [1, true, null, {}, [], "", "VALID", "expired"],
  serial: [1, true, null, {}, [], "", "0x1f", "1f:", ":1f", "1f:2", "1f 2e", "g1", "a".repeat(81), "1f:".repeat(40) + "1f"],
  // The RFC 5280 names latchkey issues CRLs with; hold and removeFromCRL are not among them.
  revocationReason: [1, true, null, {}, [], "", "KeyCompromise", "certificateHold", "removeFromCRL"],
  pubKey: [1, true, null, {}, [], "", "not base64!", "k".repeat(8193)],
  proof: [1, true, null, {}, [], "", "not base64!", "A".repeat(4097)],
  pem: [1, true, null, {}, [], "", "x".repeat(65_537)],
  nickname: [1, true, null, {}, ["n"], "n".repeat(65)],
  email: [1, true, null, {}, [], "no at sign", "two@at@signs", `a@${"x".repeat(253)}`],
  csr: [1, true, null, {}, [], "", "x".repeat(16_385)],
  days: ["30", true, null, {}, [30], 1.5, 0, -1, 3651, 1e9],
};

/**
 * How each kind of field answers each hostile string, written out by hand from the documented
 * limits (README and SPEC; the exact numbers as the OpenAPI document and the error messages give
 * them), not computed: "reject" is a 400 naming the field; "accept" goes through; "deny" is the
 * login or licensing call failing as it would for any wrong value (401, or the seed's 404).
 *
 * The strings, for reading the table: traversal "../../etc/passwd" (16 characters), script
 * "<script>alert(1)</script>" (25), sql "' OR 1=1 --" (11), nul (24, holds U+0000, a control
 * character), long (10,000), rtl (20, starts with U+202E, a format character), emoji (11 UTF-16
 * units, no control or format character), crlf (29, holds CR LF, control characters).
 */
type Outcome = "reject" | "accept" | "deny";
const [A, R, D] = ["accept", "reject", "deny"] as const;
/** Fields of a strict form (a pattern, a list of values, a number, a date): no hostile string fits. */
const REJECTS_ALL: Record<Hostile, Outcome> = { traversal: R, script: R, sql: R, nul: R, long: R, rtl: R, emoji: R, crlf: R };
const HOSTILE_OUTCOMES: Record<Kind, Record<Hostile, Outcome>> = {
  // A new password is anything of 8 to 1024 characters.
  password: { traversal: A, script: A, sql: A, nul: A, long: R, rtl: A, emoji: A, crlf: A },
  // A password given to log in, up to 1024 characters, is only wrong: a failed login.
  loginPassword: { traversal: D, script: D, sql: D, nul: D, long: R, rtl: D, emoji: D, crlf: D },
  // A session token of up to 256 characters that was never issued: a failed sign-in.
  token: { traversal: D, script: D, sql: D, nul: D, long: R, rtl: D, emoji: D, crlf: D },
  // Free-text search and audit filters: up to 128 characters, no NUL (PostgreSQL cannot store one).
  filter: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: A },
  // Application names: up to 100 characters, no control or format characters.
  appName: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: R, emoji: A, crlf: R },
  // Support messages and memos: up to 1000 characters of anything but NUL.
  text1000: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: A },
  // A machine's hwid (admin side) and the licensing calls' machine and user: up to 255 characters, no NUL.
  hwid: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: A },
  wireText: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: A },
  // The licensing calls' nonce: up to 128 characters, no NUL.
  wireNonce: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: A },
  // A license token of up to 128 characters that names no key: the seed's 404, not bad input.
  wireToken: { traversal: D, script: D, sql: D, nul: D, long: R, rtl: D, emoji: D, crlf: D },
  // Key labels: up to 100 characters, no control characters (format characters are text).
  keyLabel: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: R },
  // A client's version and os: up to 64 characters, no control characters.
  clientText: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: R },
  // A client's display name: up to 64 characters, no control or format characters.
  clientName: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: R, emoji: A, crlf: R },
  // This server requires no key: any auth_key of up to 64 characters is ignored.
  authKey: { traversal: A, script: A, sql: A, nul: A, long: R, rtl: A, emoji: A, crlf: A },
  username: REJECTS_ALL,
  role: REJECTS_ALL,
  groups: REJECTS_ALL,
  boolean: REJECTS_ALL,
  nonce: REJECTS_ALL,
  response: REJECTS_ALL,
  scramFirst: REJECTS_ALL,
  scramFinal: REJECTS_ALL,
  outcome: REJECTS_ALL,
  timestamp: REJECTS_ALL,
  limit: REJECTS_ALL,
  offset: REJECTS_ALL,
  id: REJECTS_ALL,
  activations: REJECTS_ALL,
  nullableTimestamp: REJECTS_ALL,
  wireId: REJECTS_ALL,
  quantity: REJECTS_ALL,
  group: REJECTS_ALL,
  keyStatus: REJECTS_ALL,
  clientStatus: REJECTS_ALL,
  uuid: REJECTS_ALL,
  hostname: REJECTS_ALL,
  certKind: REJECTS_ALL,
  certStatus: REJECTS_ALL,
  serial: REJECTS_ALL,
  revocationReason: REJECTS_ALL,
  // A public key as base64, and a proof as base64: none of the hostile strings is base64 of anything (the long one is too long).
  pubKey: REJECTS_ALL,
  proof: REJECTS_ALL,
  // A certificate's PEM: no hostile string is one (400 naming it).
  pem: REJECTS_ALL,
  // A certificate's nickname: up to 64 characters, no control characters.
  nickname: { traversal: A, script: A, sql: A, nul: R, long: R, rtl: A, emoji: A, crlf: R },
  // An e-mail address, or nothing: none of the hostile strings is one.
  email: REJECTS_ALL,
  // A certificate request: no hostile string is one (400 naming it; the long one over the 16384 limit).
  csr: REJECTS_ALL,
  // A certificate's validity in days: a whole number from 1 to 3650, never a string.
  days: REJECTS_ALL,
};

// ---------------------------------------------------------------------------------------------
// REST routes.

interface BodyField {
  kind: Kind;
  required?: boolean;
  /** Unique values (application names): accepted hostile values get a suffix per case. */
  unique?: boolean;
}

/** A hostile value for a field: unique fields get a suffix, so that two cases never collide. */
const hostileValue = (field: BodyField, value: string) => (field.unique ? `${value}-${++counter}` : value);

interface RouteCases {
  /** A concrete path for the route (params filled with something harmless). */
  path: string;
  /** Builds the path with a hostile value in its parameter, and names that parameter. */
  param?: { name: string; build: (value: string) => string; notFound?: boolean };
  /** A valid body and its fields, for routes that take one. */
  body?: {
    valid: () => Record<string, unknown>;
    fields: Record<string, BodyField>;
    status: number;
    /** The body may be left out: an empty one is answered as usual (`status`). */
    optional?: boolean;
  };
  /** List routes: query-string garbage, each with the field it must name. */
  query?: { query: string; field: string }[];
  /** The route takes no input: garbage in the body or query is ignored, never a 500. */
  ignoresInput?: boolean;
  /**
   * The seed's public licensing calls: errors in the seed's shape, unknown fields ignored, and
   * a refusal (an unknown token) is a 404 answer, or 429 once the address is throttled.
   */
  wire?: boolean;
}

const LIST_QUERY_GARBAGE = [
  { query: "limit=-1", field: "limit" },
  { query: "limit=abc", field: "limit" },
  { query: "limit=100000", field: "limit" },
  { query: "limit=0", field: "limit" },
  { query: "limit=1.5", field: "limit" },
  { query: "limit=1e3", field: "limit" },
  { query: "limit=", field: "limit" },
  { query: "limit=%00", field: "limit" },
  { query: `limit=${"9".repeat(5000)}`, field: "limit" },
  { query: "limit=1&limit=2", field: "limit" },
  { query: "offset=-1", field: "offset" },
  { query: "offset=abc", field: "offset" },
  { query: "offset=99999999999", field: "offset" },
  { query: "unknown=1", field: "unknown" },
  { query: "__proto__=1", field: "__proto__" },
  { query: "constructor=1", field: "constructor" },
  { query: "limit[]=1", field: "limit[]" },
  { query: "%%%", field: "%%%" },
  { query: `${"k".repeat(5000)}=v`, field: "k".repeat(5000) },
];

/** The charts' range: 24h, 7d or 30d, once. */
const STATS_QUERY_GARBAGE = [
  { query: "range=1y", field: "range" },
  { query: "range=24H", field: "range" },
  { query: "range=", field: "range" },
  { query: "range=%00", field: "range" },
  { query: "range=24h&range=7d", field: "range" },
  { query: `range=${"7".repeat(5000)}d`, field: "range" },
  { query: "unknown=1", field: "unknown" },
  { query: "__proto__=1", field: "__proto__" },
];

const usernamePath = (prefix: string) => (value: string) => `${prefix}/${encodeURIComponent(value)}`;
const hostPath = (suffix: string) => (value: string) => `/api/hosts/${encodeURIComponent(value)}${suffix}`;
const serialPath = (suffix: string) => (value: string) => `/api/certs/${encodeURIComponent(value)}${suffix}`;
const CERTIFICATE_STATUS_GARBAGE = [
  { query: "status=valid", field: "status" },
  { query: "status=ACTIVE", field: "status" },
  { query: "status=", field: "status" },
  { query: "status=active&status=revoked", field: "status" },
];

const ROUTES: Record<string, RouteCases> = {
  "GET /": { path: "/?x=<script>", ignoresInput: true },
  "GET /panel/*": { path: "/panel/app.css", param: { name: "*", build: (v) => `/panel/${encodeURIComponent(v)}`, notFound: true } },
  "GET /healthz": { path: "/healthz?junk=%00&limit=-1", ignoresInput: true },
  "GET /metrics": { path: "/metrics?junk=%00", ignoresInput: true },
  "GET /openapi/json": { path: "/openapi/json?junk=1", ignoresInput: true },
  "GET /swagger/json": { path: "/swagger/json?junk=1", ignoresInput: true },
  "GET /swagger": { path: "/swagger?junk=1", ignoresInput: true },
  "GET /swagger/*": { path: "/swagger/init.js", param: { name: "*", build: (v) => `/swagger/${encodeURIComponent(v)}`, notFound: true } },
  "POST /api/auth/login": {
    path: "/api/auth/login",
    body: {
      valid: () => ({ username: "nobody-at-all", password: "not-a-password" }),
      fields: {
        username: { kind: "username", required: true },
        password: { kind: "loginPassword", required: true },
        cookie: { kind: "boolean" },
        nonce: { kind: "nonce" },
        response: { kind: "response" },
      },
      status: 401,
    },
  },
  "POST /api/auth/scram/start": {
    path: "/api/auth/scram/start",
    body: {
      valid: () => ({ client_first: "n,,n=nobody,r=abcdefghijklmnop" }),
      fields: { client_first: { kind: "scramFirst", required: true } },
      status: 200,
    },
  },
  "POST /api/auth/scram/finish": {
    path: "/api/auth/scram/finish",
    body: {
      valid: () => ({ client_final: "c=biws,r=unknownnonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }),
      fields: { client_final: { kind: "scramFinal", required: true }, cookie: { kind: "boolean" } },
      status: 401,
    },
  },
  "POST /api/auth/challenge": {
    path: "/api/auth/challenge",
    body: { valid: () => ({ username: "nobody-at-all" }), fields: { username: { kind: "username", required: true } }, status: 404 },
  },
  "POST /api/auth/logout": { path: "/api/auth/logout", ignoresInput: true },
  "GET /api/auth/session": { path: "/api/auth/session?junk=1", ignoresInput: true },
  "GET /api/users": { path: "/api/users", query: LIST_QUERY_GARBAGE },
  "POST /api/users": {
    path: "/api/users",
    body: {
      valid: () => ({ username: fresh(), password: "valid-password" }),
      fields: {
        username: { kind: "username", required: true },
        password: { kind: "password", required: true },
        role: { kind: "role" },
        allowed_groups: { kind: "groups" },
      },
      status: 201,
    },
  },
  "GET /api/users/:username": { path: "/api/users/bad-target", param: { name: "username", build: usernamePath("/api/users") } },
  "PATCH /api/users/:username": {
    path: "/api/users/bad-target",
    param: { name: "username", build: usernamePath("/api/users") },
    body: {
      valid: () => ({ role: "viewer" }),
      fields: { role: { kind: "role" }, allowed_groups: { kind: "groups" }, password: { kind: "password" } },
      status: 200,
    },
  },
  "DELETE /api/users/:username": { path: "/api/users/nobody-at-all", param: { name: "username", build: usernamePath("/api/users") } },
  "GET /api/me/certificates": { path: "/api/me/certificates", query: [...LIST_QUERY_GARBAGE, ...CERTIFICATE_STATUS_GARBAGE] },
  "GET /api/user-certificates": {
    path: "/api/user-certificates",
    query: [
      ...LIST_QUERY_GARBAGE,
      ...CERTIFICATE_STATUS_GARBAGE,
      { query: "username=", field: "username" },
      { query: "username=..%2F..%2Fetc", field: "username" },
      { query: "username=a&username=b", field: "username" },
    ],
  },
  "GET /api/users/:username/certificates": {
    path: "/api/users/bad-target/certificates",
    param: { name: "username", build: (v) => `/api/users/${encodeURIComponent(v)}/certificates` },
    query: [...LIST_QUERY_GARBAGE, ...CERTIFICATE_STATUS_GARBAGE],
  },
  // SELF_SIGNED is registered already: each case that gets through is a 409.
  "POST /api/users/:username/certificates": {
    path: "/api/users/bad-target/certificates",
    param: { name: "username", build: (v) => `/api/users/${encodeURIComponent(v)}/certificates` },
    body: {
      valid: () => ({ certificate: SELF_SIGNED, nickname: "bad-input", email: "bad@example.com" }),
      fields: { certificate: { kind: "pem", required: true }, nickname: { kind: "nickname" }, email: { kind: "email" } },
      status: 409,
    },
  },
  // REGISTERED_KEY_CSR asks for a key registered already: each case that gets through is a 409, and nothing is issued.
  "POST /api/users/:username/certificates/issue": {
    path: "/api/users/bad-target/certificates/issue",
    param: { name: "username", build: (v) => `/api/users/${encodeURIComponent(v)}/certificates/issue` },
    body: {
      valid: () => ({ csr: REGISTERED_KEY_CSR, days: 30, nickname: "bad-input", email: "bad@example.com" }),
      fields: { csr: { kind: "csr" }, days: { kind: "days" }, nickname: { kind: "nickname" }, email: { kind: "email" } },
      status: 409,
    },
  },
  "POST /api/users/:username/certificates/:fingerprint/revoke": {
    path: `/api/users/bad-target/certificates/${NO_FINGERPRINT}/revoke`,
    param: { name: "fingerprint", build: (v) => `/api/users/bad-target/certificates/${encodeURIComponent(v)}/revoke` },
    ignoresInput: true,
  },
  "GET /api/audit": {
    path: "/api/audit",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "outcome=ok", field: "outcome" },
      { query: "outcome=", field: "outcome" },
      { query: "since=yesterday", field: "since" },
      { query: "since=2026-13-45T99:99:99Z", field: "since" },
      { query: "until=0", field: "until" },
      { query: "until=%3Cscript%3E", field: "until" },
      { query: "format=xml", field: "format" },
      { query: "format=JSONL", field: "format" },
      { query: `actor=${"a".repeat(10_000)}`, field: "actor" },
      { query: `action=${"a".repeat(129)}`, field: "action" },
      { query: "actor=a&actor=b", field: "actor" },
    ],
  },
  "GET /ws": { path: "/ws", ignoresInput: true },
  "PUT /:namespace/:name": { path: "/rpc/query", param: { name: "namespace", build: (v) => `/${encodeURIComponent(v)}/query` } },
  "POST /api/activate": {
    path: "/api/activate",
    wire: true,
    query: wireQueryGarbage({ machineRequired: true }),
    body: {
      valid: () => ({ token: licenseToken(1), app_id: APP_ID, hwid: HWID, user: "sam" }),
      fields: {
        token: { kind: "wireToken", required: true },
        app_id: { kind: "wireId" },
        hwid: { kind: "wireText", required: true },
        machine: { kind: "wireText" },
        user: { kind: "wireText" },
        nonce: { kind: "wireNonce" },
      },
      status: 201,
    },
  },
  // A GET: its fields come as a query string only. Without hwid and machine it is a failed check
  // (404, test/licensing.test.ts), not bad input.
  "GET /api/check": { path: "/api/check", wire: true, query: wireQueryGarbage({ machineRequired: false }) },
  "POST /api/deactivate": {
    path: "/api/deactivate",
    wire: true,
    query: wireQueryGarbage({ machineRequired: true }),
    body: {
      // License 3 has no activation: the usual answer is 404 "machine is not activated".
      valid: () => ({ token: licenseToken(3), app_id: APP_ID, hwid: HWID }),
      fields: {
        token: { kind: "wireToken", required: true },
        app_id: { kind: "wireId" },
        hwid: { kind: "wireText", required: true },
        machine: { kind: "wireText" },
        user: { kind: "wireText" },
        nonce: { kind: "wireNonce" },
      },
      status: 404,
    },
  },
  "GET /api/license/public-key": {
    path: "/api/license/public-key",
    query: [
      { query: "format=xml", field: "format" },
      { query: "format=PEM", field: "format" },
      { query: "format=", field: "format" },
      { query: "format=pem&format=json", field: "format" },
      { query: "unknown=1", field: "unknown" },
      { query: "__proto__=1", field: "__proto__" },
    ],
  },
  "GET /api/apps": { path: "/api/apps", query: LIST_QUERY_GARBAGE },
  "POST /api/apps": {
    path: "/api/apps",
    body: {
      valid: () => ({ name: fresh() }),
      fields: { name: { kind: "appName", required: true, unique: true }, support_message: { kind: "text1000" } },
      status: 201,
    },
  },
  "GET /api/apps/:id": { path: `/api/apps/${APP_ID}`, param: { name: "id", build: (v) => `/api/apps/${encodeURIComponent(v)}` } },
  "PATCH /api/apps/:id": {
    path: `/api/apps/${APP_ID}`,
    param: { name: "id", build: (v) => `/api/apps/${encodeURIComponent(v)}` },
    body: {
      valid: () => ({ support_message: "patched" }),
      fields: { name: { kind: "appName", unique: true }, support_message: { kind: "text1000" } },
      status: 200,
    },
  },
  "DELETE /api/apps/:id": { path: "/api/apps/999999", param: { name: "id", build: (v) => `/api/apps/${encodeURIComponent(v)}` } },
  "GET /api/licenses": {
    path: "/api/licenses",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "app_id=abc", field: "app_id" },
      { query: "app_id=0", field: "app_id" },
      { query: "app_id=-1", field: "app_id" },
      { query: "app_id=1&app_id=2", field: "app_id" },
      { query: "enabled=yes", field: "enabled" },
      { query: "enabled=1", field: "enabled" },
      { query: "enabled=", field: "enabled" },
      { query: `q=${"q".repeat(101)}`, field: "q" },
      { query: "q=a&q=b", field: "q" },
    ],
  },
  "POST /api/licenses": {
    path: "/api/licenses",
    body: {
      valid: () => ({ app_id: APP_ID, activations: 2, memo: "bad-input" }),
      fields: {
        app_id: { kind: "id", required: true },
        activations: { kind: "activations" },
        memo: { kind: "text1000" },
        expires_at: { kind: "timestamp" },
      },
      status: 201,
    },
  },
  "GET /api/licenses/:id": { path: "/api/licenses/1", param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}` } },
  "PATCH /api/licenses/:id": {
    path: `/api/licenses/${PATCHED_LICENSE}`,
    param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}` },
    body: {
      valid: () => ({ memo: "patched" }),
      fields: {
        enabled: { kind: "boolean" },
        memo: { kind: "text1000" },
        activations: { kind: "activations" },
        expires_at: { kind: "nullableTimestamp" },
      },
      status: 200,
    },
  },
  "DELETE /api/licenses/:id": {
    path: "/api/licenses/999999",
    param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}` },
  },
  "GET /api/licenses/:id/activations": {
    path: "/api/licenses/2/activations",
    param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}/activations` },
  },
  "DELETE /api/licenses/:id/activations/:hwid": {
    path: "/api/licenses/3/activations/never-activated",
    param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}/activations/${HWID}` },
  },
  "GET /api/stats": { path: "/api/stats", query: STATS_QUERY_GARBAGE },
  "GET /api/licenses/:id/stats": {
    path: "/api/licenses/1/stats",
    param: { name: "id", build: (v) => `/api/licenses/${encodeURIComponent(v)}/stats` },
    query: STATS_QUERY_GARBAGE,
  },
  "GET /api/apps/:id/stats": {
    path: `/api/apps/${APP_ID}/stats`,
    param: { name: "id", build: (v) => `/api/apps/${encodeURIComponent(v)}/stats` },
    query: STATS_QUERY_GARBAGE,
  },
  "GET /api/settings": { path: "/api/settings?junk=%00", ignoresInput: true },
  "PATCH /api/settings": {
    path: "/api/settings",
    body: { valid: () => ({ require_auth_key: false }), fields: { require_auth_key: { kind: "boolean" } }, status: 200 },
  },
  "GET /api/keys": {
    path: "/api/keys",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "status=expired", field: "status" },
      { query: "status=PENDING", field: "status" },
      { query: "status=", field: "status" },
      { query: "status=pending&status=active", field: "status" },
    ],
  },
  "POST /api/keys": {
    path: "/api/keys",
    body: {
      valid: () => ({ quantity: 1, label: "bad-input" }),
      fields: {
        quantity: { kind: "quantity", required: true },
        label: { kind: "keyLabel" },
        expires_at: { kind: "timestamp" },
        group: { kind: "group" },
      },
      status: 201,
    },
  },
  "GET /api/keys/:id": { path: "/api/keys/1", param: { name: "id", build: (v) => `/api/keys/${encodeURIComponent(v)}` } },
  "POST /api/keys/:id/revoke": {
    path: "/api/keys/2/revoke",
    param: { name: "id", build: (v) => `/api/keys/${encodeURIComponent(v)}/revoke` },
    ignoresInput: true,
  },
  "POST /api/keys/:id/reset": {
    path: "/api/keys/3/reset",
    param: { name: "id", build: (v) => `/api/keys/${encodeURIComponent(v)}/reset` },
    ignoresInput: true,
  },
  "DELETE /api/keys/:id": { path: "/api/keys/999999", param: { name: "id", build: (v) => `/api/keys/${encodeURIComponent(v)}` } },
  "GET /api/keys/:id/install-command": {
    path: "/api/keys/1/install-command",
    param: { name: "id", build: (v) => `/api/keys/${encodeURIComponent(v)}/install-command` },
    query: [
      { query: "server=no-port.example", field: "server" },
      { query: "server=host:port", field: "server" },
      { query: "server=", field: "server" },
      { query: "server=a.example:1%3Brm%20-rf%20%2F", field: "server" },
      { query: "server=%24(id):9000", field: "server" },
      { query: "server=a.example:1&server=b.example:2", field: "server" },
      { query: "unknown=1", field: "unknown" },
      { query: "__proto__=1", field: "__proto__" },
    ],
  },
  "GET /api/clients": {
    path: "/api/clients",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "status=gone", field: "status" },
      { query: "status=ONLINE", field: "status" },
      { query: "status=online&status=offline", field: "status" },
      { query: "group=", field: "group" },
      { query: "group=..%2F..%2Fetc", field: "group" },
      { query: `group=${"g".repeat(65)}`, field: "group" },
      { query: "group=a&group=b", field: "group" },
    ],
  },
  "GET /api/clients/:uuid": {
    path: `/api/clients/${CLIENT_UUID}`,
    param: { name: "uuid", build: (v) => `/api/clients/${encodeURIComponent(v)}` },
  },
  "DELETE /api/clients/:uuid": {
    path: `/api/clients/${NO_CLIENT_UUID}`,
    param: { name: "uuid", build: (v) => `/api/clients/${encodeURIComponent(v)}` },
  },
  "GET /api/hosts": {
    path: "/api/hosts",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "status=gone", field: "status" },
      { query: "status=ONLINE", field: "status" },
      { query: "status=online&status=offline", field: "status" },
      { query: "group=", field: "group" },
      { query: "group=..%2F..%2Fetc", field: "group" },
      { query: `group=${"g".repeat(65)}`, field: "group" },
      { query: "group=a&group=b", field: "group" },
    ],
  },
  "POST /api/hosts": {
    path: "/api/hosts",
    body: {
      valid: () => ({ hostname: freshHost() }),
      fields: { hostname: { kind: "hostname", required: true }, group: { kind: "group" } },
      status: 201,
    },
  },
  "GET /api/hosts/:hostname": { path: `/api/hosts/${HOST}`, param: { name: "hostname", build: hostPath("") } },
  "DELETE /api/hosts/:hostname": { path: `/api/hosts/${NO_HOST}`, param: { name: "hostname", build: hostPath("") } },
  // Takes no body: each case that gets through issues one more certificate for HOST.
  "POST /api/hosts/:hostname/bundle": {
    path: `/api/hosts/${HOST}/bundle`,
    param: { name: "hostname", build: hostPath("/bundle") },
    ignoresInput: true,
  },
  "GET /api/ca.pem": { path: "/api/ca.pem?junk=%00", ignoresInput: true },
  "GET /api/crl": {
    path: "/api/crl",
    query: [
      { query: "format=xml", field: "format" },
      { query: "format=PEM", field: "format" },
      { query: "format=", field: "format" },
      { query: "format=pem&format=der", field: "format" },
      { query: "unknown=1", field: "unknown" },
      { query: "__proto__=1", field: "__proto__" },
    ],
  },
  "GET /api/ca": { path: "/api/ca?junk=%00", ignoresInput: true },
  "GET /api/certs": {
    path: "/api/certs",
    query: [
      ...LIST_QUERY_GARBAGE,
      { query: "kind=root", field: "kind" },
      { query: "kind=HOST", field: "kind" },
      { query: "kind=host&kind=user", field: "kind" },
      { query: "status=expired", field: "status" },
      { query: "status=", field: "status" },
      { query: "status=valid&status=revoked", field: "status" },
      { query: "hostname=", field: "hostname" },
      { query: "hostname=..%2F..%2Fetc", field: "hostname" },
      { query: "hostname=under_score.example", field: "hostname" },
      { query: `hostname=${"h".repeat(254)}`, field: "hostname" },
      { query: "hostname=a.example&hostname=b.example", field: "hostname" },
    ],
  },
  "GET /api/certs/:serial": { path: `/api/certs/${NO_SERIAL}`, param: { name: "serial", build: serialPath("") } },
  "POST /api/certs/:serial/revoke": {
    path: `/api/certs/${NO_SERIAL}/revoke`,
    param: { name: "serial", build: serialPath("/revoke") },
    body: { valid: () => ({ reason: "keyCompromise" }), fields: { reason: { kind: "revocationReason" } }, status: 404, optional: true },
  },
};

/**
 * Query-string garbage for the public licensing calls. None of these reaches a token lookup,
 * so none counts towards the address's invalid-token throttle. Activate and deactivate also
 * refuse a call that names no machine (neither hwid nor machine).
 */
function wireQueryGarbage({ machineRequired }: { machineRequired: boolean }): { query: string; field: string }[] {
  const T = "ZZZZZZZZZZZZZZZZZZZZZZZZZ";
  return [
    { query: "hwid=h", field: "token" },
    { query: "token=&hwid=h", field: "token" },
    { query: "token=%20%20&hwid=h", field: "token" },
    { query: "token[]=x&hwid=h", field: "token" },
    { query: `token=${"A".repeat(129)}&hwid=h`, field: "token" },
    { query: `token=${T}&token=${T}&hwid=h`, field: "token" },
    ...(machineRequired
      ? [
          { query: `token=${T}`, field: "hwid" },
          { query: `token=${T}&hwid=&machine=`, field: "hwid" },
        ]
      : []),
    { query: `token=${T}&hwid=${"h".repeat(256)}`, field: "hwid" },
    { query: `token=${T}&hwid=a&hwid=b`, field: "hwid" },
    { query: `token=${T}&machine=${"m".repeat(256)}`, field: "machine" },
    { query: `token=${T}&hwid=h&user=${"u".repeat(256)}`, field: "user" },
    { query: `token=${T}&hwid=h&nonce=${"n".repeat(129)}`, field: "nonce" },
    { query: `token=${T}&hwid=h&app_id=abc`, field: "app_id" },
    { query: `token=${T}&hwid=h&app_id=0`, field: "app_id" },
    { query: `token=${T}&hwid=h&app_id=-1`, field: "app_id" },
    { query: `token=${T}&hwid=h&app_id=1.5`, field: "app_id" },
    { query: `token=${T}&hwid=h&app_id=1e3`, field: "app_id" },
    { query: `token=${T}&hwid=h&app_id=${"9".repeat(40)}`, field: "app_id" },
  ];
}

describe("every REST route has bad-input cases", () => {
  test("no route is left out, and no case names a route that does not exist", () => {
    const appRoutes = server.app.routes.map((r) => `${r.method === "WS" ? "GET" : r.method} ${r.path}`);
    expect(Object.keys(ROUTES).sort()).toEqual([...new Set(appRoutes)].sort());
  });
});

const routeEntries = Object.entries(ROUTES);
/** The routes that need no session (test/access-control.test.ts holds them to it). */
const PUBLIC = new Set([
  "GET /",
  "GET /panel/*",
  "GET /healthz",
  "GET /metrics",
  "GET /openapi/json",
  "GET /swagger/json",
  "GET /swagger",
  "GET /swagger/*",
  "POST /api/auth/login",
  "POST /api/auth/scram/start",
  "POST /api/auth/scram/finish",
  "POST /api/auth/challenge",
  "POST /api/activate",
  "GET /api/check",
  "POST /api/deactivate",
  "GET /api/license/public-key",
  "GET /api/ca.pem",
  "GET /api/crl",
]);
const auth = (key: string) => (PUBLIC.has(key) ? {} : { token: admin });
const methodOf = (key: string) => key.split(" ")[0]!;
const shapeOf = (key: string): Shape => (ROUTES[key]?.wire ? "wire" : "api");

describe("malformed bodies", () => {
  const bodies = [
    { label: "malformed JSON", raw: '{"username": "x",', type: "application/json" },
    { label: "truncated JSON", raw: '{"username"', type: "application/json" },
    { label: "a JSON array", raw: "[]", type: "application/json" },
    { label: "a JSON array of the valid body", raw: "VALID_IN_ARRAY", type: "application/json" },
    { label: "JSON null", raw: "null", type: "application/json" },
    { label: "a JSON string", raw: '"hello"', type: "application/json" },
    { label: "a JSON number", raw: "42", type: "application/json" },
    { label: "an empty body", raw: "", type: "application/json" },
    { label: "NUL bytes", raw: "\u0000\u0000\u0000", type: "application/json" },
    { label: "JSON sent as text/plain", raw: "VALID", type: "text/plain" },
    // Parsed as a form; whatever the route makes of it, it is refused.
    { label: "a form body", raw: "username=admin&password=x", type: "application/x-www-form-urlencoded", statuses: [400, 401] },
    { label: "deeply nested JSON (10,000 levels)", raw: `{"a":${"[".repeat(10_000)}${"]".repeat(10_000)}}`, type: "application/json" },
    { label: "deeply nested JSON (200,000 levels)", raw: `{"a":${"[".repeat(200_000)}${"]".repeat(200_000)}}`, type: "application/json" },
    { label: "nested objects, 33 levels", raw: `${'{"a":'.repeat(33)}1${"}".repeat(33)}`, type: "application/json" },
  ] as { label: string; raw: string; type: string; statuses?: number[] }[];
  // A body that may be left out may be empty: then the route answers as it does without one.
  const asUsual = (r: RouteCases, raw: string) => raw === "" && r.body!.optional === true;
  const cases = routeEntries
    .filter(([, r]) => r.body)
    .flatMap(([key, r]) => bodies.map((b) => ({ key, ...b, route: r, expected: asUsual(r, b.raw) ? r.body!.status : 400 })));

  test.each(cases)("$key: $label → $expected", async ({ key, raw, type, route, statuses }) => {
    const valid = JSON.stringify(route.body!.valid());
    const rawBody = raw === "VALID" ? valid : raw === "VALID_IN_ARRAY" ? `[${valid}]` : raw;
    const res = await call(server.url, methodOf(key), route.path, { ...auth(key), rawBody, headers: { "content-type": type } });
    if (asUsual(route, raw)) expect(res.status).toBe(route.body!.status);
    else await expectClientError(res, statuses ?? 400, undefined, shapeOf(key));
  });

  // The RPC mirror reads its body as text and parses it itself, whatever the content type says.
  const mirrorCases = bodies.filter((b) => !b.raw.startsWith("VALID"));
  test.each(mirrorCases)("PUT /latchkey/users: $label → 400", async ({ raw, type }) => {
    const res = await call(server.url, "PUT", "/latchkey/users", { token: admin, rawBody: raw, headers: { "content-type": type } });
    await expectClientError(res, 400, ["body", "args", "args.action"]);
  });

  const ignoring = routeEntries.filter(([key, r]) => r.ignoresInput && ["POST", "PATCH", "PUT", "DELETE"].includes(methodOf(key)));
  const ignoringCases = ignoring.flatMap(([key, r]) => bodies.map((b) => ({ key, ...b, route: r })));
  // Generated from fixed lists, nothing random (so no seed): each case's name says what it sent.
  describe(
    `fuzz: ${ignoringCases.length} requests generated from fixed lists, ` +
      `${ignoring.length} write routes that take no input × ${bodies.length} malformed bodies; never a 500`,
    () => {
      test.each(ignoringCases)("$key ignores $label (no 500)", async ({ key, raw, type, route }) => {
        const token = key === "POST /api/auth/logout" ? await login(server.url) : admin;
        const res = await call(server.url, methodOf(key), route.path, { token, rawBody: raw, headers: { "content-type": type } });
        expect(res.status).toBeLessThan(500);
        await expectAlive();
      });
    },
  );
});

describe("body fields: wrong types, missing, unknown, hostile", () => {
  interface FieldCase {
    label: string;
    key: string;
    path: string;
    /** Made when the case runs: some valid bodies hold license tokens made in beforeAll. */
    body: () => Record<string, unknown>;
    expect: { status: number | number[]; field?: string | string[] } | "accept";
    okStatus: number;
  }
  const cases: FieldCase[] = [];
  for (const [key, route] of routeEntries) {
    if (!route.body) continue;
    const { valid, fields, status: okStatus } = route.body;
    // The seed's calls ignore fields they do not know: seed clients may send more.
    const unknown = (name: string) => (route.wire ? ("accept" as const) : { status: 400, field: name });
    cases.push({
      label: "an unknown field",
      key,
      path: route.path,
      body: () => ({ ...valid(), bogus: 1 }),
      expect: unknown("bogus"),
      okStatus,
    });
    cases.push({
      label: "an unknown field with a hostile name",
      key,
      path: route.path,
      body: () => ({ ...valid(), [HOSTILE.script!]: 1 }),
      expect: unknown(HOSTILE.script!),
      okStatus,
    });
    for (const [name, field] of Object.entries(fields)) {
      if (field.required) {
        const body = () => {
          const without = valid();
          delete without[name];
          return without;
        };
        cases.push({ label: `${name} missing`, key, path: route.path, body, expect: { status: 400, field: name }, okStatus });
      }
      for (const value of WRONG_TYPES[field.kind]) {
        const named = field.kind === "groups" ? [name, `${name}.0`] : name;
        cases.push({
          label: `${name} = ${JSON.stringify(value)?.slice(0, 40)}`,
          key,
          path: route.path,
          body: () => ({ ...valid(), [name]: value }),
          expect: { status: 400, field: named },
          okStatus,
        });
      }
      for (const [hostile, value] of Object.entries(HOSTILE)) {
        const outcome = HOSTILE_OUTCOMES[field.kind][hostile as Hostile];
        const fieldName = field.kind === "groups" ? `${name}.0` : name;
        const denied = route.wire ? [404, 429] : [401, 429];
        const expected =
          outcome === "reject" ? { status: 400, field: fieldName } : outcome === "deny" ? { status: denied } : ("accept" as const);
        const body = () => ({ ...valid(), [name]: field.kind === "groups" ? [value] : hostileValue(field, value) });
        cases.push({ label: `${name}: ${hostile}`, key, path: route.path, body, expect: expected, okStatus });
      }
    }
  }

  test.each(cases)("$key: $label", async ({ key, path, body, expect: expected, okStatus }) => {
    const res = await call(server.url, methodOf(key), path, { ...auth(key), body: body() });
    if (expected === "accept") {
      expect({ status: res.status, text: res.text.slice(0, 300) }).toMatchObject({ status: okStatus });
      await expectAlive();
    } else {
      await expectClientError(res, expected.status, expected.field, shapeOf(key));
    }
  });
});

describe("hostile path parameters", () => {
  const cases = routeEntries
    .filter(([, r]) => r.param)
    .flatMap(([key, r]) =>
      Object.entries(HOSTILE).map(([label, value]) => ({
        key,
        label,
        path: r.param!.build(value),
        param: r.param!,
        body: r.body?.valid(),
      })),
    );

  test.each(cases)("$key with a $label parameter", async ({ key, path, param, body }) => {
    const res = await call(server.url, methodOf(key), path, { ...auth(key), ...(body ? { body } : {}) });
    if (param.notFound) await expectClientError(res, 404);
    else await expectClientError(res, 400, param.name);
    // Nothing became a file path: no file content came back.
    expect(res.text).not.toContain("root:");
  });

  const rpcNames = Object.entries(HOSTILE).map(([label, value]) => ({ label, path: `/rpc/${encodeURIComponent(value)}` }));
  test.each(rpcNames)("PUT /rpc/<$label> → 400 naming the name", async ({ path }) => {
    await expectClientError(await call(server.url, "PUT", path, { token: admin, body: {} }), 400, "name");
  });
});

describe("query-string garbage on list routes", () => {
  const cases = routeEntries.flatMap(([key, r]) => (r.query ?? []).map((q) => ({ key, path: r.path, ...q })));
  test.each(cases)("$key?$query", async ({ key, path, query, field }) => {
    await expectClientError(await call(server.url, methodOf(key), `${path}?${query}`, { token: admin }), 400, field, shapeOf(key));
  });

  const ignoring = routeEntries.filter(([key, r]) => r.ignoresInput && methodOf(key) === "GET" && key !== "GET /ws");
  test.each(ignoring.map(([key, r]) => ({ key, path: r.path })))("$key ignores its query string", async ({ key, path }) => {
    const res = await call(server.url, "GET", path, auth(key));
    expect(res.status).toBe(200);
  });
});

describe("oversized bodies", () => {
  const bodyRoutes = routeEntries.filter(([key]) => ["POST", "PATCH", "PUT"].includes(methodOf(key)));

  test.each(bodyRoutes.map(([key, r]) => ({ key, path: r.path })))("$key: a 2 MB body is refused with 413", async ({ key, path }) => {
    const username = fresh();
    const rawBody = JSON.stringify({ username, password: "valid-password", pad: "x".repeat(2 * 1024 * 1024) });
    const res = await call(server.url, methodOf(key), path, { ...auth(key), rawBody, headers: { "content-type": "application/json" } });
    // Bun's own body limit answers before the app runs, so this reply carries no JSON body.
    expect(res.status).toBe(413);
    await expectAlive();
    expect((await call(server.url, "GET", `/api/users/${username}`, { token: admin })).status).toBe(404);
  });

  test("--max-body sets the limit", async () => {
    const small = await startTestServer({ flags: ["--max-body", "4096"] });
    try {
      const token = await login(small.url);
      const at = (size: number) => {
        const empty = JSON.stringify({ username: "max-body", password: "valid-password", allowed_groups: [""] });
        return JSON.stringify({ username: "max-body", password: "valid-password", allowed_groups: ["g".repeat(size - empty.length)] });
      };
      // Just over: refused before any work. Just under: validated as usual (a group name is at most 64).
      const over = await call(small.url, "POST", "/api/users", {
        token,
        rawBody: at(4097),
        headers: { "content-type": "application/json" },
      });
      expect(over.status).toBe(413);
      const under = await call(small.url, "POST", "/api/users", {
        token,
        rawBody: at(4096),
        headers: { "content-type": "application/json" },
      });
      expect(under.status).toBe(400);
      expect(under.body.error.field).toBe("allowed_groups.0");
      expect((await call(small.url, "GET", "/healthz")).status).toBe(200);
    } finally {
      await small.close();
    }
  });
});

describe("hostile passwords are stored exactly as given", () => {
  // A server of its own: the failed logins here must not count towards this address's throttle there.
  let own: TestServer;
  let ownAdmin: string;
  beforeAll(async () => {
    own = await startTestServer();
    ownAdmin = await login(own.url);
  });
  afterAll(() => own.close());

  const passwords = [
    { label: "NUL in the middle", stored: "pass\u0000word-one", near: ["pass", "pass\u0000word-two"] },
    { label: "SQL", stored: "' OR 1=1 --", near: ["' OR 1=1 -", "' OR 1=2 --"] },
    { label: "RTL override", stored: "\u202Eabcdefgh", near: ["abcdefgh", "\u202Dabcdefgh"] },
    { label: "emoji", stored: "🔑🔑🔑🔑", near: ["🔑🔑🔑", "🔑🔑🔑🔑🔑"] },
    { label: "1024 characters", stored: "z".repeat(1024), near: ["z".repeat(1023), "z".repeat(1024).replace(/z$/, "y")] },
  ];
  test.each(passwords)("$label: only the exact password logs in", async ({ stored, near }) => {
    const username = fresh();
    await createUser(own.url, ownAdmin, { username, password: stored });
    for (const attempt of near) {
      expect((await call(own.url, "POST", "/api/auth/login", { body: { username, password: attempt } })).status).toBe(401);
    }
    expect(await login(own.url, username, stored)).toBeString();
  });
});

describe("malformed Authorization headers", () => {
  const headers = [
    { label: "Bearer without a token", value: "Bearer", message: /Bearer <token>/ },
    { label: "Bearer and spaces", value: "Bearer    ", message: /Bearer <token>/ },
    { label: "Basic credentials", value: "Basic xyz", message: /Bearer <token>/ },
    { label: "Basic user:password", value: `Basic ${btoa("admin:correct horse battery")}`, message: /Bearer <token>/ },
    { label: "another scheme", value: "Token abcdef", message: /Bearer <token>/ },
    { label: "two tokens", value: "Bearer abc def", message: /Bearer <token>/ },
    { label: "a token alone", value: "abcdefghijklmnop", message: /Bearer <token>/ },
    { label: "an empty header", value: "", message: /Bearer <token>/ },
    { label: "a 10 KB token", value: `Bearer ${"t".repeat(10 * 1024)}`, message: /too long/ },
    { label: "an unknown token", value: "Bearer this-is-not-a-token-we-issued", message: /unknown or has expired/ },
    { label: "a hostile token", value: "Bearer ../../etc/passwd", message: /unknown or has expired/ },
  ];
  // GET /ws only answers upgrades: the WebSocket test below covers it.
  const guarded = routeEntries.filter(([key]) => !PUBLIC.has(key) && key !== "GET /ws");
  const cases = guarded.flatMap(([key, r]) => headers.map((h) => ({ key, path: r.path, ...h, body: r.body?.valid() })));

  test.each(cases)("$key with $label → 401", async ({ key, path, value, message, body }) => {
    const res = await call(server.url, methodOf(key), path, { headers: { authorization: value }, ...(body ? { body } : {}) });
    await expectClientError(res, 401);
    expect(res.body.error.code).toBe("unauthorized");
    expect(res.body.error.message).toMatch(message);
    expect(res.headers.get("www-authenticate")).toStartWith("Bearer");
  });

  test.each(headers)("a WebSocket upgrade with $label is refused", async ({ value }) => {
    await expect(RpcClient.connect(server.wsUrl, { authorization: value })).rejects.toThrow();
    await expectAlive();
  });

  test("a good token still works after all that", async () => {
    expect((await call(server.url, "GET", "/api/users", { token: admin })).status).toBe(200);
  });
});

// A Host with a space leaves the request's URL relative; answering must still work.
const MALFORMED_HOSTS = ["a b", "evil.example:9000 -key AAAA-BBBB-CCCC", "x;id", "host:99999999"];
const hostCases = routeEntries
  .filter(([key]) => key !== "GET /ws")
  .flatMap(([key, r]) =>
    MALFORMED_HOSTS.map((host) => ({
      key,
      host,
      path: r.path,
      body: r.body ? JSON.stringify(r.body.valid()).replace(/:[^,}]+/g, ":{}") : undefined,
    })),
  );

// Generated from fixed lists, nothing random (so no seed): each case's name says what it sent.
describe(
  `fuzz: ${hostCases.length} requests generated from fixed lists, ` +
    `every route but /ws × ${MALFORMED_HOSTS.length} malformed Host headers, ` +
    "without a token, each body's values replaced by {}; never a 500",
  () => {
    test.each(hostCases)("$key with Host $host: never a 500", async ({ key, host, path, body }) => {
      // Without a token and with a wrong-typed body: an error answer, in the route's shape.
      const res = await call(server.url, methodOf(key), path, {
        headers: { host, ...(body ? { "content-type": "application/json" } : {}) },
        ...(body ? { rawBody: body } : {}),
      });
      expect({ status: res.status, text: res.text.slice(0, 200) }).toMatchObject({ status: res.status < 500 ? res.status : 499 });
      if (res.status >= 400 && res.headers.get("content-type")?.startsWith("application/json")) {
        if (shapeOf(key) === "wire") expect(res.body.result).toBe("failure");
        else if (res.status !== 413) expect(Object.keys(res.body)).toEqual(["error"]);
      }
      await expectAlive();
    });
  },
);

// ---------------------------------------------------------------------------------------------
// RPC: every registered call, over the REST mirror and over /ws.

interface RpcCases {
  /** A valid args object (a function, so that each case gets fresh names). */
  valid?: () => Record<string, unknown>;
  fields?: Record<string, BodyField>;
  /** The call takes any args at all. */
  anything?: boolean;
  /** The args are a union of shapes: errors may name just "args". */
  union?: boolean;
  okCode: number;
  /** A failed login may also be throttled (429) after the many failures before it. */
  deniedCodes?: number[];
  /**
   * Calls that only make sense on the WebSocket (a client's registration is its connection's
   * presence): what the REST mirror answers where /ws answers as usual, once the args are valid.
   */
  mirror?: { code: number; field?: string };
}

/** `rpc/settings` and its alias: SELF_SIGNED is registered for bad-target already (409), UNREGISTERED_PUB_KEY for nobody (404). */
const SSL_SETTINGS: RpcCases[] = [
  { valid: () => ({ action: "list_ssl_certs" }), fields: {}, okCode: 200 },
  { valid: () => ({ action: "list_ssl_checksums" }), fields: {}, okCode: 200 },
  {
    valid: () => ({
      action: "register_ssl_cert",
      certificate: SELF_SIGNED,
      user: "bad-target",
      nickname: "bad-input",
      email: "b@example.com",
    }),
    fields: {
      certificate: { kind: "pem" },
      pub_key: { kind: "pubKey" },
      nickname: { kind: "nickname" },
      email: { kind: "email" },
      user: { kind: "username" },
    },
    okCode: 409,
  },
  {
    valid: () => ({ action: "revoke_ssl_cert", pub_key: UNREGISTERED_PUB_KEY, user: "bad-target" }),
    fields: { pub_key: { kind: "pubKey", required: true }, user: { kind: "username" } },
    okCode: 404,
  },
];

const RPCS: Record<string, RpcCases[]> = {
  "rpc/auth": [
    {
      valid: () => ({ username: "nobody-at-all", password: "not-a-password" }),
      fields: { username: { kind: "username", required: true }, password: { kind: "loginPassword", required: true } },
      okCode: 401,
      deniedCodes: [401, 429],
    },
  ],
  "rpc/auth_token": [{ valid: () => ({ token: "not-a-token" }), fields: { token: { kind: "token", required: true } }, okCode: 401 }],
  "rpc/auth_scram": [
    {
      valid: () => ({ client_first: "n,,n=nobody,r=abcdefghijklmnop" }),
      fields: { client_first: { kind: "scramFirst", required: true } },
      okCode: 200,
      union: true,
    },
    {
      valid: () => ({ client_final: "c=biws,r=unknownnonce,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }),
      fields: { client_final: { kind: "scramFinal", required: true } },
      okCode: 401,
      union: true,
    },
  ],
  // Stage 2 without a test string outstanding: a failed login over /ws; the mirror refuses it (it needs the WebSocket).
  "rpc/auth_ssl": [
    {
      valid: () => ({ encrypted_string: "AAAA" }),
      fields: { encrypted_string: { kind: "proof", required: true } },
      okCode: 401,
      deniedCodes: [401, 429],
      union: true,
      mirror: { code: 400, field: "namespace" },
    },
  ],
  "rpc/auth_clear": [{ anything: true, okCode: 200 }],
  "rpc/query": [{ anything: true, okCode: 200 }],
  "rpc/settings": SSL_SETTINGS,
  "settings/sysadm": SSL_SETTINGS,
  "latchkey/users": [
    { valid: () => ({ action: "list" }), fields: { limit: { kind: "limit" }, offset: { kind: "offset" } }, okCode: 200 },
    { valid: () => ({ action: "get", username: "bad-target" }), fields: { username: { kind: "username", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "create", username: fresh(), password: "valid-password" }),
      fields: {
        username: { kind: "username", required: true },
        password: { kind: "password", required: true },
        role: { kind: "role" },
        allowed_groups: { kind: "groups" },
      },
      okCode: 200,
    },
    {
      valid: () => ({ action: "update", username: "bad-target", role: "viewer" }),
      fields: {
        username: { kind: "username", required: true },
        role: { kind: "role" },
        allowed_groups: { kind: "groups" },
        password: { kind: "password" },
      },
      okCode: 200,
    },
    {
      valid: () => ({ action: "delete", username: "nobody-at-all" }),
      fields: { username: { kind: "username", required: true } },
      okCode: 404,
    },
  ],
  "latchkey/licenses": [
    { valid: () => ({ action: "list_apps" }), fields: { limit: { kind: "limit" }, offset: { kind: "offset" } }, okCode: 200 },
    { valid: () => ({ action: "get_app", id: APP_ID }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "create_app", name: fresh() }),
      fields: { name: { kind: "appName", required: true, unique: true }, support_message: { kind: "text1000" } },
      okCode: 200,
    },
    {
      valid: () => ({ action: "update_app", id: APP_ID, support_message: "patched over rpc" }),
      fields: { id: { kind: "id", required: true }, name: { kind: "appName", unique: true }, support_message: { kind: "text1000" } },
      okCode: 200,
    },
    { valid: () => ({ action: "delete_app", id: 999999 }), fields: { id: { kind: "id", required: true } }, okCode: 404 },
    {
      valid: () => ({ action: "list" }),
      fields: {
        app_id: { kind: "id" },
        enabled: { kind: "boolean" },
        q: { kind: "filter" },
        limit: { kind: "limit" },
        offset: { kind: "offset" },
      },
      okCode: 200,
    },
    { valid: () => ({ action: "get", id: 1 }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "create", app_id: APP_ID, activations: 3 }),
      fields: {
        app_id: { kind: "id", required: true },
        activations: { kind: "activations" },
        memo: { kind: "text1000" },
        expires_at: { kind: "timestamp" },
      },
      okCode: 200,
    },
    {
      valid: () => ({ action: "update", id: PATCHED_LICENSE, memo: "patched over rpc" }),
      fields: {
        id: { kind: "id", required: true },
        enabled: { kind: "boolean" },
        memo: { kind: "text1000" },
        activations: { kind: "activations" },
        expires_at: { kind: "nullableTimestamp" },
      },
      okCode: 200,
    },
    { valid: () => ({ action: "delete", id: 999999 }), fields: { id: { kind: "id", required: true } }, okCode: 404 },
    { valid: () => ({ action: "activations", id: 2 }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    {
      // License 3 has no activation: removing one is a 404, whatever the (valid) hwid.
      valid: () => ({ action: "remove_activation", id: 3, hwid: "never-activated" }),
      fields: { id: { kind: "id", required: true }, hwid: { kind: "hwid", required: true } },
      okCode: 404,
    },
  ],
  "latchkey/settings": [
    { valid: () => ({ action: "get" }), fields: {}, okCode: 200 },
    { valid: () => ({ action: "update", require_auth_key: false }), fields: { require_auth_key: { kind: "boolean" } }, okCode: 200 },
  ],
  "latchkey/keys": [
    {
      valid: () => ({ action: "list" }),
      fields: { status: { kind: "keyStatus" }, limit: { kind: "limit" }, offset: { kind: "offset" } },
      okCode: 200,
    },
    { valid: () => ({ action: "get", id: 1 }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "generate", quantity: 1, label: "bad-input rpc" }),
      fields: {
        quantity: { kind: "quantity", required: true },
        label: { kind: "keyLabel" },
        expires_at: { kind: "timestamp" },
        group: { kind: "group" },
      },
      okCode: 200,
    },
    { valid: () => ({ action: "revoke", id: 2 }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    { valid: () => ({ action: "reset", id: 3 }), fields: { id: { kind: "id", required: true } }, okCode: 200 },
    { valid: () => ({ action: "delete", id: 999999 }), fields: { id: { kind: "id", required: true } }, okCode: 404 },
  ],
  "latchkey/clients": [
    {
      valid: () => ({ action: "list" }),
      fields: { status: { kind: "clientStatus" }, group: { kind: "group" }, limit: { kind: "limit" }, offset: { kind: "offset" } },
      okCode: 200,
    },
    { valid: () => ({ action: "get", uuid: CLIENT_UUID }), fields: { uuid: { kind: "uuid", required: true } }, okCode: 200 },
    { valid: () => ({ action: "delete", uuid: NO_CLIENT_UUID }), fields: { uuid: { kind: "uuid", required: true } }, okCode: 404 },
  ],
  "latchkey/hosts": [
    {
      valid: () => ({ action: "list" }),
      fields: { group: { kind: "group" }, status: { kind: "clientStatus" }, limit: { kind: "limit" }, offset: { kind: "offset" } },
      okCode: 200,
    },
    { valid: () => ({ action: "get", hostname: HOST }), fields: { hostname: { kind: "hostname", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "register", hostname: freshHost(), group: "g1" }),
      fields: { hostname: { kind: "hostname", required: true }, group: { kind: "group" } },
      okCode: 200,
    },
    { valid: () => ({ action: "remove", hostname: NO_HOST }), fields: { hostname: { kind: "hostname", required: true } }, okCode: 404 },
    { valid: () => ({ action: "bundle", hostname: HOST }), fields: { hostname: { kind: "hostname", required: true } }, okCode: 200 },
  ],
  "latchkey/certs": [
    {
      valid: () => ({ action: "list" }),
      fields: {
        kind: { kind: "certKind" },
        status: { kind: "certStatus" },
        hostname: { kind: "hostname" },
        limit: { kind: "limit" },
        offset: { kind: "offset" },
      },
      okCode: 200,
    },
    { valid: () => ({ action: "get", serial: hostSerial }), fields: { serial: { kind: "serial", required: true } }, okCode: 200 },
    {
      valid: () => ({ action: "revoke", serial: NO_SERIAL, reason: "superseded" }),
      fields: { serial: { kind: "serial", required: true }, reason: { kind: "revocationReason" } },
      okCode: 404,
    },
    { valid: () => ({ action: "ca" }), fields: {}, okCode: 200 },
  ],
  // Registered on the test's own socket, as CLIENT_UUID (again).
  "client/register": [
    {
      valid: registration,
      fields: {
        uuid: { kind: "uuid", required: true },
        name: { kind: "clientName", required: true },
        hostname: { kind: "hostname", required: true },
        version: { kind: "clientText" },
        os: { kind: "clientText" },
        auth_key: { kind: "authKey" },
      },
      okCode: 200,
      mirror: { code: 400, field: "namespace" },
    },
  ],
  // Over /ws, the test's own socket, registered by the cases above; the mirror has no registered client.
  "client/csr": [
    {
      valid: () => ({ csr: CLIENT_CSR }),
      fields: { csr: { kind: "csr", required: true } },
      okCode: 200,
      mirror: { code: 400, field: "namespace" },
    },
  ],
  // Over /ws each case registers a client of its own to keep alive; the mirror has no presence to keep.
  "client/heartbeat": [{ anything: true, okCode: 200, mirror: { code: 401 } }],
  "latchkey/audit": [
    {
      valid: () => ({ action: "list" }),
      fields: {
        actor: { kind: "filter" },
        event: { kind: "filter" },
        outcome: { kind: "outcome" },
        since: { kind: "timestamp" },
        until: { kind: "timestamp" },
        limit: { kind: "limit" },
        offset: { kind: "offset" },
      },
      okCode: 200,
    },
  ],
};

describe("every RPC has bad-input cases", () => {
  test("no registered call is left out", () => {
    expect(Object.keys(RPCS).sort()).toEqual(
      server.registry
        .entries()
        .map(([k]) => k)
        .sort(),
    );
  });
});

describe("RPC args", () => {
  interface ArgsCase {
    label: string;
    call: string;
    /** Made anew for each transport, so that a create over /ws does not meet the mirror's. */
    args: () => unknown;
    /** Expected code and (for 400s) the field; "ok" is the call's usual answer. */
    expect: { code: number | number[]; field?: string | string[] };
    mirror?: { code: number; field?: string } | undefined;
  }
  const cases: ArgsCase[] = [];
  for (const [key, variants] of Object.entries(RPCS)) {
    for (const spec of variants) {
      if (spec.anything) {
        for (const args of [null, 42, "junk", [1, 2], { a: { b: [] } }, HOSTILE.long, { __proto__: null, constructor: 1 }]) {
          cases.push({
            label: `any args: ${JSON.stringify(args)?.slice(0, 30)}`,
            call: key,
            args: () => args,
            expect: { code: spec.okCode },
            mirror: spec.mirror,
          });
        }
        continue;
      }
      const valid = spec.valid!;
      const base = JSON.stringify(valid()).slice(0, 40);
      cases.push({
        label: `${base} is answered as usual`,
        call: key,
        args: valid,
        expect: { code: spec.deniedCodes ?? spec.okCode },
        mirror: spec.mirror,
      });
      for (const args of [undefined, null, 42, "junk", true, [], [valid()]]) {
        cases.push({
          label: `${base} as ${JSON.stringify(args) ?? "nothing"}`.slice(0, 90),
          call: key,
          args: () => args,
          expect: { code: 400 },
        });
      }
      // A union of call shapes cannot say which member the unknown field is unknown to.
      const unknownField = spec.union ? ["args.bogus", "args"] : "args.bogus";
      cases.push({
        label: `${base} with an unknown field`,
        call: key,
        args: () => ({ ...valid(), bogus: 1 }),
        expect: { code: 400, field: unknownField },
      });
      for (const [name, field] of Object.entries(spec.fields!)) {
        if (field.required) {
          const args = () => {
            const without = valid();
            delete without[name];
            return without;
          };
          const missing = spec.union ? [`args.${name}`, "args"] : `args.${name}`;
          cases.push({ label: `${base} without ${name}`, call: key, args, expect: { code: 400, field: missing } });
        }
        for (const value of WRONG_TYPES[field.kind]) {
          const args = () => ({ ...valid(), [name]: value });
          const named =
            field.kind === "groups" ? [`args.${name}`, `args.${name}.0`] : spec.union ? [`args.${name}`, "args"] : `args.${name}`;
          cases.push({
            label: `${base} ${name} = ${JSON.stringify(value)?.slice(0, 30)}`,
            call: key,
            args,
            expect: { code: 400, field: named },
          });
        }
        for (const [hostile, value] of Object.entries(HOSTILE)) {
          const outcome = HOSTILE_OUTCOMES[field.kind][hostile as Hostile];
          const args = () => ({ ...valid(), [name]: field.kind === "groups" ? [value] : hostileValue(field, value) });
          // Core parsers (SCRAM) name the field without the args. prefix.
          const fields = field.kind === "groups" ? [`args.${name}.0`] : [`args.${name}`, name];
          const expected =
            outcome === "reject"
              ? { code: 400, field: fields }
              : outcome === "deny"
                ? { code: [401, 429] }
                : { code: spec.deniedCodes ?? spec.okCode };
          cases.push({
            label: `${base} ${name}: ${hostile}`,
            call: key,
            args,
            expect: expected,
            ...(outcome === "reject" ? {} : { mirror: spec.mirror }),
          });
        }
      }
    }
  }

  let rpc: RpcClient;
  /** Sessions for rpc/auth_clear to end, one per case, made before any login is throttled. */
  const spare: string[] = [];
  beforeAll(async () => {
    rpc = await RpcClient.connect(server.wsUrl);
    for (const c of cases) if (c.call === "rpc/auth_clear") spare.push(await login(server.url));
  });
  afterAll(() => rpc.close());

  test.each(cases)("$call $label", async ({ call: name, args: makeArgs, expect: expected, mirror }) => {
    const [namespace, rpcName] = name.split("/") as [string, string];
    const codes = Array.isArray(expected.code) ? expected.code : [expected.code];
    const fields = expected.field === undefined ? undefined : Array.isArray(expected.field) ? expected.field : [expected.field];
    const isLogin = namespace === "rpc" && rpcName.startsWith("auth");
    // A WebSocket-only call: the mirror answers its own refusal (the args were valid).
    const mirrorCodes = mirror ? [mirror.code] : codes;
    const mirrorFields = mirror ? (mirror.field === undefined ? undefined : [mirror.field]) : fields;

    // Over the REST mirror.
    const args = makeArgs();
    const res = await call(server.url, "PUT", `/${name}`, {
      ...(isLogin ? {} : { token: admin }),
      ...(args === undefined ? {} : { rawBody: JSON.stringify(args), headers: { "content-type": "application/json" } }),
    });
    if (mirrorCodes.every((c) => c < 400)) {
      expect(mirrorCodes).toContain(res.status);
      expect(Object.keys(res.body)).toEqual(["args"]);
      await expectAlive();
    } else {
      await expectClientError(res, mirrorCodes, mirrorFields);
    }

    // Over /ws, signed in as the admin for the calls that need it (auth_clear ends a spare session);
    // a heartbeat on a socket of its own, registered as a client that is deleted afterwards.
    let reply: any;
    if (name === "client/heartbeat") {
      const heartbeatClient = crypto.randomUUID();
      const socket = await RpcClient.connect(server.wsUrl);
      try {
        expect(
          (await socket.request("client", "register", { ...registration(), uuid: heartbeatClient, name: "bad-input heartbeat" })).name,
        ).toBe("response");
        reply = await socket.request(namespace, rpcName, makeArgs());
      } finally {
        expect((await call(server.url, "DELETE", `/api/clients/${heartbeatClient}`, { token: admin })).status).toBe(204);
        socket.close();
      }
    } else {
      const signInAs = name === "rpc/auth_clear" ? spare.pop()! : isLogin ? undefined : admin;
      if (signInAs) expect((await rpc.request("rpc", "auth_token", { token: signInAs })).name).toBe("response");
      reply = await rpc.request(namespace, rpcName, makeArgs());
    }
    expect(reply.namespace).toBe("rpc");
    const code = reply.name === "response" ? 200 : reply.args.code;
    expect(codes).toContain(code);
    if (reply.name === "error") {
      expect(reply.args.message).toBeString();
      if (fields) expect(fields).toContain(reply.args.field);
    }
    // The socket still answers, and auth_clear left it signed out.
    if (name === "rpc/auth_clear") expect((await rpc.request("rpc", "query", {})).args.code).toBe(401);
    expect((await rpc.request("rpc", "auth_token", { token: admin })).name).toBe("response");
  });
});

describe("afterwards", () => {
  test("the server still answers and no stored data was corrupted", async () => {
    await expectAlive();
    const target = await call(server.url, "GET", "/api/users/bad-target", { token: admin });
    expect(target.status).toBe(200);
    expect(target.body.username).toBe("bad-target");
    const users = await call(server.url, "GET", "/api/users?limit=1000", { token: admin });
    for (const u of users.body.items) expect(u.username).toMatch(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/);
    const admins = await call(server.url, "GET", "/api/users/admin", { token: admin });
    expect(admins.body.role).toBe("admin");
  });

  test("the licensing fixtures are intact: tokens, seats and activations agree", async () => {
    for (let id = 1; id <= 4; id++) {
      const license = await call(server.url, "GET", `/api/licenses/${id}`, { token: admin });
      expect(license.body).toMatchObject({ id, app_id: APP_ID, token: licenseToken(id), activations: -1, enabled: true });
      const activations = await call(server.url, "GET", `/api/licenses/${id}/activations`, { token: admin });
      expect(license.body.activations_used).toBe(activations.body.total);
    }
    const checked = await call(server.url, "GET", `/api/check?token=${licenseToken(2)}&hwid=${HWID}`);
    expect(checked.body).toEqual({ result: "ok", receipt: expect.any(String) });
    expect(
      (await call(server.url, "GET", "/api/licenses/2/activations", { token: admin })).body.items.map((a: { hwid: string }) => a.hwid),
    ).toEqual([HWID]);
    expect((await call(server.url, "GET", "/api/licenses/3/activations", { token: admin })).body.total).toBe(0);
  });
  test("the enrollment fixtures are intact: settings, keys and the registered client", async () => {
    expect((await call(server.url, "GET", "/api/settings", { token: admin })).body).toMatchObject({ require_auth_key: false });
    const keys = await call(server.url, "GET", "/api/keys?limit=1000", { token: admin });
    for (const k of keys.body.items) expect(k.key).toMatch(/^[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}-[A-HJKMNP-Z2-9]{4}$/);
    expect((await call(server.url, "GET", "/api/keys/1", { token: admin })).body).toMatchObject({
      id: 1,
      status: "pending",
      label: "bad-input fixtures",
    });
    expect((await call(server.url, "GET", "/api/keys/2", { token: admin })).body.status).toBe("revoked");
    expect((await call(server.url, "GET", "/api/keys/3", { token: admin })).body.status).toBe("pending");
    const client = await call(server.url, "GET", `/api/clients/${CLIENT_UUID}`, { token: admin });
    expect(client.body).toMatchObject({ ...registration(), key_id: null, group: null });
    const clients = await call(server.url, "GET", "/api/clients?limit=1000", { token: admin });
    expect(clients.body.items.map((c: { uuid: string }) => c.uuid)).toEqual([CLIENT_UUID]);
  });

  test("the host fixtures are intact: the host, its certificate, and only well-formed hostnames registered", async () => {
    expect((await call(server.url, "GET", `/api/hosts/${HOST}`, { token: admin })).body).toMatchObject({ hostname: HOST, group: "g1" });
    expect((await call(server.url, "GET", `/api/certs/${hostSerial}`, { token: admin })).body).toMatchObject({
      hostname: HOST,
      status: "valid",
    });
    const hosts = await call(server.url, "GET", "/api/hosts?limit=1000", { token: admin });
    for (const h of hosts.body.items) expect(h.hostname).toMatch(/^[a-z0-9][a-z0-9.-]*\.example$/);
    const revoked = await call(server.url, "GET", "/api/certs?status=revoked", { token: admin });
    expect(revoked.body.total).toBe(0);
  });
});
