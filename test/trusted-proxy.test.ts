/**
 * `--trusted-proxy CIDR[,CIDR]`: only connections from those addresses may name the client in
 * X-Forwarded-For or Forwarded; the address then shows in the audit log, the throttles, WebSocket
 * connections and the licensing counters. Off by default: the header is then ignored.
 */
import { describe, expect, test } from "bun:test";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { clientAddress, parseCidr, TrustedProxies } from "../src/http/client-address.ts";
import { call, login, RpcClient, startTestServer, tempDir, type TestServer } from "./support.ts";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const headers = (h: Record<string, string>) => new Headers(h);

describe("the client's address", () => {
  const trusted = new TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
  test.each([
    ["no proxy trusted: the header is ignored", "127.0.0.1", { "x-forwarded-for": "6.6.6.6" }, null, "127.0.0.1"],
    ["an untrusted peer cannot name anyone", "192.0.2.9", { "x-forwarded-for": "6.6.6.6" }, trusted, "192.0.2.9"],
    ["a trusted peer names the client", "127.0.0.1", { "x-forwarded-for": "203.0.113.7" }, trusted, "203.0.113.7"],
    [
      "what the client wrote itself, on the left, is not believed",
      "127.0.0.1",
      { "x-forwarded-for": "6.6.6.6, 203.0.113.7" },
      trusted,
      "203.0.113.7",
    ],
    [
      "a chain of trusted proxies is walked from the right",
      "127.0.0.1",
      { "x-forwarded-for": "203.0.113.7, 10.1.1.1, 10.2.2.2" },
      trusted,
      "203.0.113.7",
    ],
    ["a chain of only trusted hops gives the leftmost", "127.0.0.1", { "x-forwarded-for": "10.3.3.3, 10.2.2.2" }, trusted, "10.3.3.3"],
    [
      "a hop that is not an address stops the walk at the peer",
      "127.0.0.1",
      { "x-forwarded-for": "203.0.113.7, garbage" },
      trusted,
      "127.0.0.1",
    ],
    ["addresses with ports", "127.0.0.1", { "x-forwarded-for": "203.0.113.7:5555" }, trusted, "203.0.113.7"],
    ["IPv6 with brackets and port", "127.0.0.1", { "x-forwarded-for": "[2001:db8::1]:443" }, trusted, "2001:db8::1"],
    ["an empty header", "127.0.0.1", { "x-forwarded-for": "" }, trusted, "127.0.0.1"],
    [
      "Forwarded (RFC 7239) when there is no X-Forwarded-For",
      "127.0.0.1",
      { forwarded: 'for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"' },
      trusted,
      "2001:db8:cafe::17",
    ],
    [
      "X-Forwarded-For wins over Forwarded",
      "127.0.0.1",
      { forwarded: "for=6.6.6.6", "x-forwarded-for": "203.0.113.7" },
      trusted,
      "203.0.113.7",
    ],
    ["an IPv4-mapped IPv6 peer is matched as IPv4", "::ffff:127.0.0.1", { "x-forwarded-for": "203.0.113.7" }, trusted, "203.0.113.7"],
    ["an IPv6 proxy", "fd00::1", { "x-forwarded-for": "203.0.113.7" }, trusted, "203.0.113.7"],
    ["no header: the peer", "127.0.0.1", {}, trusted, "127.0.0.1"],
  ] as const)("%s", (_, peer, h, list, expected) => {
    expect(clientAddress(peer, headers(h), list)).toBe(expected);
  });

  test.each([
    ["10.0.0.0/8", { address: "10.0.0.0", prefix: 8, family: "ipv4" }],
    ["127.0.0.1", { address: "127.0.0.1", prefix: 32, family: "ipv4" }],
    ["::1", { address: "::1", prefix: 128, family: "ipv6" }],
    ["2001:db8::/32", { address: "2001:db8::", prefix: 32, family: "ipv6" }],
    ["10.0.0.0/33", null],
    ["10.0.0.0/8/8", null],
    ["10.0.0/8", null],
    ["example.com", null],
    ["10.0.0.0/x", null],
    ["", null],
  ] as const)("CIDR %p", (text, expected) => {
    expect(parseCidr(text)).toEqual(expected as never);
  });

  test("the setting comes from the flag, the variable or latchkey.json, and a bad value is refused with a remedy", () => {
    const dir = tempDir();
    try {
      const config = (argv: string[], env: Record<string, string> = {}) =>
        loadConfig(parseArgs(["--data-dir", dir.path, ...argv], serverFlags), env);
      expect(config([]).trustedProxies).toEqual([]);
      expect(config(["--trusted-proxy", "127.0.0.1/32, 10.0.0.0/8"]).trustedProxies).toEqual(["127.0.0.1/32", "10.0.0.0/8"]);
      expect(config([], { LATCHKEY_TRUSTED_PROXY: "::1" }).trustedProxies).toEqual(["::1"]);
      expect(() => config(["--trusted-proxy", "10.0.0.0/99"])).toThrow(/--trusted-proxy must be CIDR\[,CIDR\]/);
      expect(() => config(["--trusted-proxy", "proxy.internal"])).toThrow(/LATCHKEY_TRUSTED_PROXY/);
      writeFileSync(join(dir.path, "latchkey.json"), JSON.stringify({ "trusted-proxy": ["192.168.0.0/16"] }));
      expect(config([]).trustedProxies).toEqual(["192.168.0.0/16"]);
    } finally {
      dir.remove();
    }
  });
});

/** The addresses of the failures of one action, as the audit log has them. */
async function auditAddresses(server: TestServer, token: string, action: string): Promise<string[]> {
  const res = await call(server.url, "GET", `/api/audit?format=jsonl&action=${action}&outcome=failure`, { token });
  return res.text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line).address);
}

describe("through a server", () => {
  for (const trusted of [false, true]) {
    test(
      `${trusted ? "with" : "without"} --trusted-proxy 127.0.0.1/32: ` +
        `audit, WebSockets and licensing counters use ${trusted ? "the named" : "the peer's"} address`,
      async () => {
        const server = await startTestServer({ flags: trusted ? ["--trusted-proxy", "127.0.0.1/32"] : [] });
        try {
          const expected = trusted ? "203.0.113.7" : "127.0.0.1";
          const admin = await login(server.url);
          const named = { "x-forwarded-for": "203.0.113.7" };
          expect(
            (await call(server.url, "POST", "/api/auth/login", { body: { username: "admin", password: "wrong password" }, headers: named }))
              .status,
          ).toBe(401);
          expect(await auditAddresses(server, admin, "auth.password")).toContain(expected);

          const socket = await RpcClient.connect(server.wsUrl, named);
          expect((await socket.request("rpc", "auth", { username: "nobody", password: "wrong password" })).args.code).toBe(401);
          socket.close();
          expect((await auditAddresses(server, admin, "auth.password")).filter((a) => a === expected).length).toBe(2);

          const app = await call(server.url, "POST", "/api/apps", { token: admin, body: { name: "Proxied" } });
          const license = await call(server.url, "POST", "/api/licenses", { token: admin, body: { app_id: app.body.id, activations: 1 } });
          const token = license.body.token as string;
          expect((await call(server.url, "POST", "/api/activate", { body: { token, hwid: "m1" }, headers: named })).status).toBe(201);
          expect((await fetch(`${server.url}/api/check?token=${token}&hwid=m1`, { headers: named })).status).toBe(201);
          await server.services.licensing.flush();
          const view = await call(server.url, "GET", `/api/licenses/${license.body.id}`, { token: admin });
          expect(view.body.last_check_address).toBe(expected);
          expect(view.body.last_activation_address ?? expected).toBe(expected);
        } finally {
          await server.close();
        }
      },
    );
  }
});
