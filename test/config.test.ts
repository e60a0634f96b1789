import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "../src/cli/args.ts";
import { loadConfig, serverFlags } from "../src/config.ts";
import { tempDir } from "./support.ts";

const dirs: { remove(): void }[] = [];
afterEach(() => dirs.splice(0).forEach((d) => d.remove()));

function dataDir(config?: Record<string, unknown>): string {
  const dir = tempDir();
  dirs.push(dir);
  if (config) writeFileSync(join(dir.path, "latchkey.json"), JSON.stringify(config));
  return dir.path;
}

const load = (argv: string[], env: Record<string, string> = {}) => loadConfig(parseArgs(argv, serverFlags), env);

describe("flags", () => {
  test.each([
    [["-listen", "127.0.0.1:9100"]],
    [["--listen", "127.0.0.1:9100"]],
    [["--listen=127.0.0.1:9100"]],
    [["-listen=127.0.0.1:9100"]],
  ])("%p sets the listener", (argv) => {
    const config = load([...argv, "--data-dir", dataDir()]);
    expect(config.listen).toEqual({ hostname: "127.0.0.1", port: 9100 });
  });

  test("defaults", () => {
    const dir = dataDir();
    const config = load(["--data-dir", dir]);
    expect(config).toMatchObject({
      dataDir: dir,
      listen: { hostname: "0.0.0.0", port: 9000 },
      mtlsListen: { hostname: "0.0.0.0", port: 9443 },
      logFormat: "text",
      legacyChallengeLogin: false,
      sessionIdleSeconds: 300,
      sessionAbsoluteSeconds: 86400,
      wsIdleSeconds: 600,
    });
    expect(config.requireAuthKey).toBeUndefined();
    expect(config.tls).toBeUndefined();
  });

  test("boolean switches alone or with =true/=false", () => {
    expect(load(["--data-dir", dataDir(), "-require-auth-key"]).requireAuthKey).toBe(true);
    expect(load(["--data-dir", dataDir(), "--require-auth-key=false"]).requireAuthKey).toBe(false);
  });

  test.each([
    [["--listen", "nonsense"], /--listen must be HOST:PORT/],
    [["--listen", "1.2.3.4:70000"], /port must be 0-65535/],
    [["--log-format", "xml"], /must be text or json/],
    [["--session-idle", "abc"], /whole number/],
    [["--session-idle", "1"], /--session-idle/],
    [["--tls-cert", "a.pem"], /--tls-cert and --tls-key go together/],
    [["--bogus", "1"], /unknown flag --bogus;/],
    [["--listen"], /needs a value/],
    [["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"], /more than once/],
    [["--require-auth-key=maybe"], /is a switch/],
  ])("%p is refused with a remedy", (argv, message) => {
    expect(() => load([...argv, "--data-dir", dataDir()])).toThrow(message);
  });
});

describe("precedence: flags > environment > config file > defaults", () => {
  test("config file over defaults", () => {
    const dir = dataDir({ listen: "127.0.0.1:9201", "session-idle": 120 });
    const config = load(["--data-dir", dir]);
    expect(config.listen.port).toBe(9201);
    expect(config.sessionIdleSeconds).toBe(120);
  });

  test("environment over config file", () => {
    const dir = dataDir({ listen: "127.0.0.1:9201" });
    expect(load(["--data-dir", dir], { LATCHKEY_LISTEN: "127.0.0.1:9202", LATCHKEY_SESSION_IDLE: "60" })).toMatchObject({
      listen: { port: 9202 },
      sessionIdleSeconds: 60,
    });
  });

  test("flags over environment", () => {
    const dir = dataDir({ listen: "127.0.0.1:9201" });
    expect(load(["--data-dir", dir, "--listen", "127.0.0.1:9203"], { LATCHKEY_LISTEN: "127.0.0.1:9202" }).listen.port).toBe(9203);
  });

  test("LATCHKEY_DATA_DIR picks the data directory", () => {
    const dir = dataDir({ "log-format": "json" });
    const config = loadConfig(parseArgs([], serverFlags), { LATCHKEY_DATA_DIR: dir });
    expect(config.dataDir).toBe(dir);
    expect(config.logFormat).toBe("json");
  });

  test("a config file with an unknown setting or bad JSON is an error naming it", () => {
    expect(() => load(["--data-dir", dataDir({ lisen: "x" })])).toThrow(/unknown setting "lisen"/);
    const dir = dataDir();
    writeFileSync(join(dir, "latchkey.json"), "{nope");
    expect(() => load(["--data-dir", dir])).toThrow(/latchkey.json is not valid JSON/);
  });
});
