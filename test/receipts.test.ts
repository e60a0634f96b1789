/**
 * Signed license receipts: every successful activate and check returns a compact JWS (EdDSA)
 * that an application verifies offline. Each receipt here is checked twice: independently with
 * node:crypto (Ed25519 over `header.payload`), and with `latchkey license verify` run as a
 * process on the real clock, with the public key saved from `GET /api/license/public-key?format=pem`.
 * Servers on a moved clock stand in for receipts that are old, or for a client clock set back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createPublicKey, verify } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { call, login, manualClock, runLatchkey, startTestServer, tempDir, type TestServer } from "./support.ts";

const DAY = 24 * 3600 * 1000;
const DEFAULT_TTL = 7 * 24 * 3600;
const DEFAULT_GRACE = 3 * 24 * 3600;

interface Issuer {
  server: TestServer;
  keyFile: string;
  keyId: string;
  publicKeyPem: string;
  appId: number;
  license: { id: number; token: string };
  close(): Promise<void>;
}

const files = tempDir("latchkey-receipts-");
afterAll(() => files.remove());

/** A server with one application and one 5-seat key, and its public key saved as a PEM file. */
async function issuer(name: string, options: { clock?: () => number; flags?: string[] } = {}): Promise<Issuer> {
  const server = await startTestServer(options);
  const token = await login(server.url);
  const app = (await call(server.url, "POST", "/api/apps", { token, body: { name: "Receipted" } })).body;
  const license = (await call(server.url, "POST", "/api/licenses", { token, body: { app_id: app.id, activations: 5 } })).body;
  const pem = await (await fetch(`${server.url}/api/license/public-key?format=pem`)).text();
  const keyFile = join(files.path, `${name}.pem`);
  writeFileSync(keyFile, pem);
  const keyId = (await call(server.url, "GET", "/api/license/public-key")).body.key_id;
  return {
    server,
    keyFile,
    keyId,
    publicKeyPem: pem,
    appId: app.id,
    license: { id: license.id, token: license.token },
    close: () => server.close(),
  };
}

async function activate(i: Issuer, fields: Record<string, string>): Promise<string> {
  const res = await call(i.server.url, "POST", "/api/activate", { body: { token: i.license.token, ...fields } });
  expect(res.status).toBe(201);
  return res.body.receipt;
}

async function check(i: Issuer, fields: Record<string, string>): Promise<string> {
  const res = await call(i.server.url, "GET", `/api/check?${new URLSearchParams({ token: i.license.token, ...fields })}`);
  expect(res.status).toBe(201);
  return res.body.receipt;
}

function decode(receipt: string): { header: any; claims: any; signature: Buffer } {
  const [h, p, s] = receipt.split(".") as [string, string, string];
  return {
    header: JSON.parse(Buffer.from(h, "base64url").toString()),
    claims: JSON.parse(Buffer.from(p, "base64url").toString()),
    signature: Buffer.from(s, "base64url"),
  };
}

/** Ed25519 over `header.payload`, with nothing of latchkey's own code. */
function independentlyValid(receipt: string, publicKeyPem: string): boolean {
  const [h, p, s] = receipt.split(".") as [string, string, string];
  return verify(null, Buffer.from(`${h}.${p}`), createPublicKey(publicKeyPem), Buffer.from(s, "base64url"));
}

const verifyCli = (receipt: string, keyFile: string, ...flags: string[]) =>
  runLatchkey(["license", "verify", receipt, "--public-key", keyFile, ...flags]);

let main: Issuer;
beforeAll(async () => {
  main = await issuer("main");
});
afterAll(() => main.close());

describe("receipts from a server on the real clock", () => {
  test("activate and check both return one; its header, claims and signature are what they should be", async () => {
    const before = Math.floor(Date.now() / 1000);
    const receipts = [await activate(main, { hwid: "hw-1", machine: "ICEBREAKER", user: "sam" }), await check(main, { hwid: "hw-1" })];
    const after = Math.floor(Date.now() / 1000);
    for (const receipt of receipts) {
      expect(receipt).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
      const { header, claims, signature } = decode(receipt);
      expect(header).toEqual({ alg: "EdDSA", typ: "JWT", kid: main.keyId });
      expect(claims).toEqual({
        iss: "latchkey",
        app: main.appId,
        key: main.license.id,
        hwid: "hw-1",
        iat: expect.any(Number),
        exp: claims.iat + DEFAULT_TTL,
        grace: DEFAULT_GRACE,
      });
      expect(claims.iat).toBeGreaterThanOrEqual(before);
      expect(claims.iat).toBeLessThanOrEqual(after);
      expect(signature).toHaveLength(64);
      expect(independentlyValid(receipt, main.publicKeyPem)).toBe(true);
    }
  });

  test("the JSON public key is the PEM one", async () => {
    const json = (await call(main.server.url, "GET", "/api/license/public-key")).body;
    expect(json.public_key).toBe(main.publicKeyPem);
    expect(createPublicKey(json.public_key).asymmetricKeyType).toBe("ed25519");
  });

  test("latchkey license verify accepts a valid receipt, with and without --hwid, and from stdin", async () => {
    const receipt = await activate(main, { hwid: "hw-2" });
    const plain = await verifyCli(receipt, main.keyFile);
    expect(plain).toMatchObject({ code: 0, stderr: "" });
    expect(plain.stdout).toMatch(
      new RegExp(`^valid: application ${main.appId}, license ${main.license.id}, hwid "hw-2", issued \\S+Z, expires \\S+Z\\n$`),
    );
    expect((await verifyCli(receipt, main.keyFile, "--hwid", "hw-2")).code).toBe(0);
    const stdin = await runLatchkey(["license", "verify", "-", "--public-key", main.keyFile, "--json"], { input: `${receipt}\n` });
    expect(stdin.code).toBe(0);
    expect(JSON.parse(stdin.stdout)).toEqual({ ok: true, claims: decode(receipt).claims });
  });

  test("a machine that activated by name only gets a receipt for that name", async () => {
    const receipt = await activate(main, { machine: "ICEBREAKER", user: "sam" });
    expect(decode(receipt).claims.hwid).toBe("machine:ICEBREAKER");
    expect((await verifyCli(receipt, main.keyFile, "--hwid", "machine:ICEBREAKER")).code).toBe(0);
  });

  test("a nonce is echoed in the receipt, fresh for each call; without one there is none", async () => {
    await activate(main, { hwid: "hw-nonce" });
    const first = await check(main, { hwid: "hw-nonce", nonce: "n-0001" });
    const second = await check(main, { hwid: "hw-nonce", nonce: "n-0002" });
    const none = await check(main, { hwid: "hw-nonce" });
    expect(decode(first).claims.nonce).toBe("n-0001");
    expect(decode(second).claims.nonce).toBe("n-0002");
    expect("nonce" in decode(none).claims).toBe(false);
    const activated = await activate(main, { hwid: "hw-nonce", nonce: "activation nonce ✓" });
    expect(decode(activated).claims.nonce).toBe("activation nonce ✓");
    for (const r of [first, second, activated]) expect(independentlyValid(r, main.publicKeyPem)).toBe(true);
    const cli = await verifyCli(first, main.keyFile);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('nonce "n-0001"');
    // --nonce: the receipt must answer this very request.
    expect((await verifyCli(first, main.keyFile, "--nonce", "n-0001")).code).toBe(0);
    const replayed = await verifyCli(first, main.keyFile, "--nonce", "n-0002");
    expect({ code: replayed.code, stderr: replayed.stderr }).toEqual({
      code: 1,
      stderr: 'latchkey: receipt rejected: it echoes nonce "n-0001", not "n-0002": a replayed receipt\n',
    });
    const stored = await verifyCli(none, main.keyFile, "--nonce", "n-0003");
    expect({ code: stored.code, stderr: stored.stderr }).toEqual({
      code: 1,
      stderr: 'latchkey: receipt rejected: it echoes no nonce (expected "n-0003"): a stored or replayed receipt\n',
    });
  });
});

describe("receipts that must be rejected", () => {
  let receipt: string;
  beforeAll(async () => {
    receipt = await activate(main, { hwid: "hw-reject" });
  });

  /** Re-encodes the claims with a change, keeping the original signature. */
  const withClaims = (change: Record<string, unknown>) => {
    const [h, p, s] = receipt.split(".") as [string, string, string];
    const claims = { ...JSON.parse(Buffer.from(p, "base64url").toString()), ...change };
    return `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
  };
  const withHeader = (header: Record<string, unknown>, signature?: string) => {
    const [, p, s] = receipt.split(".") as [string, string, string];
    return `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${p}.${signature ?? s}`;
  };
  const flip = (text: string, at: number) => text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1);

  const CASES: { label: string; make: () => string; reason: RegExp; flags?: string[] }[] = [
    { label: "another hwid in the claims", make: () => withClaims({ hwid: "hw-stolen" }), reason: /bad signature/ },
    { label: "a later expiry in the claims", make: () => withClaims({ exp: 4102444800 }), reason: /bad signature/ },
    { label: "another license id in the claims", make: () => withClaims({ key: 999 }), reason: /bad signature/ },
    {
      label: "a flipped signature character",
      make: () => `${receipt.slice(0, receipt.lastIndexOf(".") + 1)}${flip(receipt.split(".")[2]!, 10)}`,
      reason: /bad signature/,
    },
    { label: "a signature cut short", make: () => receipt.slice(0, -8), reason: /bad signature/ },
    {
      label: "a flipped payload character",
      make: () => {
        const [h, p, s] = receipt.split(".");
        return `${h}.${flip(p!, 12)}.${s}`;
      },
      reason: /bad signature|not JSON/,
    },
    { label: "alg none", make: () => withHeader({ alg: "none", typ: "JWT" }), reason: /unsupported algorithm "none"/ },
    { label: "alg HS256", make: () => withHeader({ alg: "HS256", typ: "JWT" }), reason: /unsupported algorithm "HS256"/ },
    {
      label: "a header that is JSON null",
      make: () => `${Buffer.from("null").toString("base64url")}.${receipt.split(".").slice(1).join(".")}`,
      reason: /unsupported algorithm/,
    },
    {
      label: "a header that is not JSON",
      make: () => `${Buffer.from("{alg:").toString("base64url")}.${receipt.split(".").slice(1).join(".")}`,
      reason: /not JSON/,
    },
    { label: "two parts", make: () => receipt.split(".").slice(0, 2).join("."), reason: /not a compact JWS/ },
    { label: "an empty signature", make: () => `${receipt.slice(0, receipt.lastIndexOf("."))}.`, reason: /not a compact JWS/ },
    { label: "garbage", make: () => "not a receipt at all", reason: /not a compact JWS/ },
    {
      label: "the right receipt for another machine",
      make: () => receipt,
      flags: ["--hwid", "hw-other"],
      reason: /issued for another machine \(hwid "hw-reject"\)/,
    },
  ];

  test.each(CASES)("$label: exit 1 with the reason", async ({ make, reason, flags }) => {
    const tampered = make();
    if (!flags) expect(/^[^.]+\.[^.]+\.[^.]+$/.test(tampered) && independentlyValid(tampered, main.publicKeyPem)).toBe(false);
    const res = await verifyCli(tampered, main.keyFile, ...(flags ?? []));
    expect(res.code).toBe(1);
    expect(res.stdout).toBe("");
    expect(res.stderr).toMatch(/^latchkey: receipt rejected: /);
    expect(res.stderr).toMatch(reason);
  });

  test("a receipt from another server's key is rejected", async () => {
    const other = await issuer("other");
    try {
      expect(other.publicKeyPem).not.toBe(main.publicKeyPem);
      const foreign = await activate(other, { hwid: "hw-reject" });
      expect(independentlyValid(foreign, main.publicKeyPem)).toBe(false);
      const res = await verifyCli(foreign, main.keyFile);
      expect(res.code).toBe(1);
      expect(res.stderr).toContain("signed by another server");
      expect((await verifyCli(foreign, other.keyFile)).code).toBe(0);
      // The other way round as well.
      expect((await verifyCli(receipt, other.keyFile)).code).toBe(1);
    } finally {
      await other.close();
    }
  });

  test("a key file that is not a public key, or no key at all", async () => {
    const junk = join(files.path, "junk.pem");
    writeFileSync(junk, "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n");
    const bad = await verifyCli(receipt, junk);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("not a PEM public key");
    const missing = await verifyCli(receipt, join(files.path, "nowhere.pem"));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("no such file");
    const none = await runLatchkey(["license", "verify", receipt]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("--public-key FILE (save it from GET /api/license/public-key?format=pem)");
  });
});

describe("receipts and time", () => {
  test("exp never lies beyond the ttl: a server with --receipt-ttl 60 issues exp = iat + 60", async () => {
    const clock = manualClock(Date.parse("2026-06-01T10:00:00.750Z"));
    const i = await issuer("ttl", { clock, flags: ["--receipt-ttl", "60", "--receipt-grace", "120"] });
    try {
      const { claims } = decode(await activate(i, { hwid: "hw-ttl" }));
      expect(claims).toMatchObject({
        iat: Date.parse("2026-06-01T10:00:00Z") / 1000,
        exp: Date.parse("2026-06-01T10:01:00Z") / 1000,
        grace: 120,
      });
    } finally {
      await i.close();
    }
  });

  test("every receipt handed out has nearly its whole lifetime left, even when an earlier one is reused", async () => {
    const clock = manualClock(Date.parse("2026-06-01T10:00:00Z"));
    const i = await issuer("fresh", { clock, flags: ["--receipt-ttl", "60"] });
    try {
      await activate(i, { hwid: "hw-fresh" });
      for (let step = 0; step < 12; step++) {
        clock.advance(5000);
        const { claims } = decode(await check(i, { hwid: "hw-fresh" }));
        const left = claims.exp - clock() / 1000;
        expect({ step, left: left >= 54 && left <= 60 }).toEqual({ step, left: true });
      }
    } finally {
      await i.close();
    }
  });

  test("expired: rejected; with --allow-grace accepted within the grace, with a warning", async () => {
    // Issued an hour ago with a 60 s lifetime: expired 59 minutes ago, inside the default 3-day grace.
    const i = await issuer("expired", { clock: manualClock(Date.now() - 3600 * 1000), flags: ["--receipt-ttl", "60"] });
    try {
      const receipt = await activate(i, { hwid: "hw-old" });
      expect(independentlyValid(receipt, i.publicKeyPem)).toBe(true);
      const strict = await verifyCli(receipt, i.keyFile);
      expect(strict.code).toBe(1);
      expect(strict.stderr).toMatch(/^latchkey: receipt rejected: expired at \S+Z\n$/);
      const lenient = await verifyCli(receipt, i.keyFile, "--allow-grace");
      expect(lenient.code).toBe(0);
      expect(lenient.stdout).toStartWith("valid: ");
      expect(lenient.stderr).toMatch(/^warning: expired at \S+Z; within grace until \S+Z\n$/);
    } finally {
      await i.close();
    }
  });

  test("expired beyond the grace: rejected even with --allow-grace", async () => {
    const i = await issuer("ancient", { clock: manualClock(Date.now() - 4 * DAY), flags: ["--receipt-ttl", "60"] });
    try {
      const res = await verifyCli(await activate(i, { hwid: "hw-ancient" }), i.keyFile, "--allow-grace");
      expect(res.code).toBe(1);
      expect(res.stderr).toMatch(/receipt rejected: expired at/);
    } finally {
      await i.close();
    }
  });

  test("a clock set back: a receipt issued a day ahead of this machine's clock is rejected", async () => {
    const i = await issuer("ahead", { clock: manualClock(Date.now() + DAY) });
    try {
      const receipt = await activate(i, { hwid: "hw-future" });
      expect(independentlyValid(receipt, i.publicKeyPem)).toBe(true);
      const res = await verifyCli(receipt, i.keyFile, "--allow-grace");
      expect(res.code).toBe(1);
      expect(res.stderr).toContain("clock is behind");
    } finally {
      await i.close();
    }
  });

  test("a few minutes of clock skew is tolerated", async () => {
    const i = await issuer("skewed", { clock: manualClock(Date.now() + 2 * 60 * 1000) });
    try {
      expect((await verifyCli(await activate(i, { hwid: "hw-skew" }), i.keyFile)).code).toBe(0);
    } finally {
      await i.close();
    }
  });
});
