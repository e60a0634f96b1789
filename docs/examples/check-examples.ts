/**
 * Runs the receipt verification samples of docs/license-receipts.md against real receipts:
 * starts dist/latchkey on a temporary data directory, makes an application and a key with the
 * CLI, activates and checks a machine over HTTP, then feeds good and bad receipts to every
 * sample (Node.js, Bun, Python, Go) and to `latchkey license verify`, and compares exit codes.
 * It also checks that docs/license-receipts.md still shows each sample file verbatim.
 *
 *   npm run build && bun docs/examples/check-examples.ts
 *
 * Python needs the `cryptography` package and Go needs `go` on PATH; a sample whose runtime is
 * missing is reported as skipped, not passed. Everything it starts is stopped before it exits.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");
const BINARY = join(ROOT, "dist", "latchkey");
const HERE = import.meta.dir;

function run(cmd: string[], env: Record<string, string> = {}): { code: number; out: string } {
  const result = Bun.spawnSync(cmd, { cwd: HERE, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: result.exitCode ?? -1, out: (result.stdout.toString() + result.stderr.toString()).trim() };
}

function cli(args: string[], dataDir: string): string {
  const result = run([BINARY, ...args, "--data-dir", dataDir]);
  if (result.code !== 0) throw new Error(`latchkey ${args.join(" ")} failed: ${result.out}`);
  return result.out.split("\n")[0]!.trim();
}

const work = mkdtempSync(join(tmpdir(), "latchkey-receipts-"));
const dataDir = join(work, "data");
const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const port = probe.port;
probe.stop(true);
const server = Bun.spawn([BINARY, "server", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
  env: { ...process.env, LATCHKEY_ADMIN_PASSWORD: `examples-${crypto.randomUUID()}` },
  stdout: "ignore",
  stderr: "ignore",
});
const base = `http://127.0.0.1:${port}`;

let passed = 0;
let failed = 0;
let skipped = 0;

try {
  for (let i = 0; ; i++) {
    if (i > 200) throw new Error("the server did not start");
    const ok = await fetch(`${base}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await Bun.sleep(50);
  }

  // What an operator does once: an application and a key with two seats.
  const appId = Number(
    /^created application (\d+)/.exec(
      cli(["app", "create", "Receipt Demo", "--support-message", "mail support@example.com"], dataDir),
    )?.[1],
  );
  const token = cli(["license", "create", "--app", String(appId), "--activations", "2"], dataDir);

  // What the application does: activate with a fresh nonce, then check without one.
  const hwid = "4c4c4544-0051-3510-8058-b4c04f565631";
  const nonce = crypto.randomUUID();
  const activated = await fetch(`${base}/api/activate`, {
    method: "POST",
    body: new URLSearchParams({ token, app_id: String(appId), hwid, machine: "ICEBREAKER", user: "sam", nonce }),
  });
  const activation = (await activated.json()) as { result: string; remainingActivations: number; receipt: string };
  if (activated.status !== 201 || activation.result !== "ok")
    throw new Error(`activate: ${activated.status} ${JSON.stringify(activation)}`);
  const checked = await fetch(`${base}/api/check?${new URLSearchParams({ token, app_id: String(appId), hwid })}`);
  const check = (await checked.json()) as { result: string; receipt: string };
  if (checked.status !== 201 || check.result !== "ok") throw new Error(`check: ${checked.status} ${JSON.stringify(check)}`);

  const pem = await (await fetch(`${base}/api/license/public-key?format=pem`)).text();
  const keyFile = join(work, "latchkey-public.pem");
  writeFileSync(keyFile, pem);
  const otherKeyFile = join(work, "other-public.pem");
  writeFileSync(otherKeyFile, generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString());

  const withNonce = activation.receipt;
  const withoutNonce = check.receipt;
  const [h, p, s] = withNonce.split(".") as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, "base64url").toString()) as { iat: number; exp: number; grace: number; nonce?: string };
  if (claims.nonce !== nonce) throw new Error("the activation receipt does not carry the nonce that was sent");
  const reencode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const tampered = `${h}.${reencode({ ...claims, hwid: "another-machine", exp: claims.exp + 365 * 86400 })}.${s}`;
  const algNone = `${reencode({ alg: "none", typ: "JWT" })}.${p}.${s}`;

  interface Case {
    name: string;
    receipt: string;
    hwid: string;
    nonce?: string;
    now?: number;
    key?: string;
    expect: 0 | 1 | 2;
  }
  const cases: Case[] = [
    { name: "activate receipt, right hwid and nonce", receipt: withNonce, hwid, nonce, expect: 0 },
    { name: "check receipt (no nonce sent)", receipt: withoutNonce, hwid, expect: 0 },
    { name: "another machine's hwid", receipt: withNonce, hwid: "another-machine", nonce, expect: 1 },
    { name: "wrong nonce", receipt: withNonce, hwid, nonce: "replayed", expect: 1 },
    { name: "nonce sent, receipt has none", receipt: withoutNonce, hwid, nonce, expect: 1 },
    { name: "claims altered", receipt: tampered, hwid: "another-machine", expect: 1 },
    { name: 'header alg "none"', receipt: algNone, hwid, expect: 1 },
    { name: "another server's key", receipt: withNonce, hwid, nonce, key: otherKeyFile, expect: 1 },
    { name: "past exp, inside grace", receipt: withNonce, hwid, nonce, now: claims.exp + 60, expect: 2 },
    { name: "past exp + grace", receipt: withNonce, hwid, nonce, now: claims.exp + claims.grace + 1, expect: 1 },
    { name: "clock 299 s behind iat (skew allowed)", receipt: withNonce, hwid, nonce, now: claims.iat - 299, expect: 0 },
    { name: "clock 301 s behind iat (set back)", receipt: withNonce, hwid, nonce, now: claims.iat - 301, expect: 1 },
    { name: "not a JWS", receipt: "garbage", hwid, expect: 1 },
  ];

  const hasPython = run(["python3", "-c", "import cryptography"]).code === 0;
  let goBinary: string | null = null;
  // Bun.spawnSync throws for a command not on PATH: ask Bun.which first, so that no Go means skipped.
  if (Bun.which("go") !== null && run(["go", "version"]).code === 0) {
    goBinary = join(work, "verify_receipt");
    const built = run(["go", "build", "-o", goBinary, "verify_receipt.go"], { GOCACHE: join(work, "go-cache"), GO111MODULE: "off" });
    if (built.code !== 0) throw new Error(`go build failed: ${built.out}`);
  }
  const samples: { name: string; cmd: string[] | null }[] = [
    { name: "node", cmd: run(["node", "--version"]).code === 0 ? ["node", "verify-receipt.mjs"] : null },
    { name: "bun", cmd: [process.execPath, "verify-receipt.mjs"] },
    { name: "python", cmd: hasPython ? ["python3", "verify_receipt.py"] : null },
    { name: "go", cmd: goBinary ? [goBinary] : null },
  ];

  const rows: string[][] = [];
  for (const c of cases) {
    const row = [c.name, String(c.expect)];
    for (const sample of samples) {
      if (!sample.cmd) {
        row.push("skipped");
        skipped++;
        continue;
      }
      const args = [c.key ?? keyFile, c.receipt, c.hwid, ...(c.nonce === undefined ? [] : [c.nonce])];
      const result = run([...sample.cmd, ...args], c.now === undefined ? {} : { VERIFY_NOW: String(c.now) });
      // The first word too: a crash also exits 1 (Node, Python) or 2 (a Go panic).
      const ok = result.code === c.expect && result.out.startsWith(`${["valid", "invalid", "grace"][c.expect]}:`);
      if (ok) passed++;
      else failed++;
      row.push(ok ? `ok ${result.code}` : `FAIL ${result.code}: ${result.out}`);
    }
    rows.push(row);
  }

  // The server's own offline verifier, on the same receipts.
  const verify = (receipt: string, machine: string, key = keyFile) =>
    run([BINARY, "license", "verify", receipt, "--public-key", key, "--hwid", machine]).code;
  for (const [name, code, expect] of [
    ["latchkey license verify: good receipt", verify(withNonce, hwid), 0],
    ["latchkey license verify: another machine", verify(withNonce, "another-machine"), 1],
    ["latchkey license verify: claims altered", verify(tampered, "another-machine"), 1],
    ["latchkey license verify: another server's key", verify(withNonce, hwid, otherKeyFile), 1],
  ] as const) {
    const ok = code === expect;
    if (ok) passed++;
    else failed++;
    rows.push([name, String(expect), ok ? `ok ${code}` : `FAIL ${code}`]);
  }

  // docs/license-receipts.md shows each sample in full: it must not drift from the tested files.
  const page = readFileSync(join(HERE, "..", "license-receipts.md"), "utf8");
  for (const file of ["verify-receipt.mjs", "verify_receipt.py", "verify_receipt.go"]) {
    const same = page.includes(readFileSync(join(HERE, file), "utf8").trimEnd());
    if (same) passed++;
    else failed++;
    rows.push([`license-receipts.md shows ${file} verbatim`, "-", same ? "ok" : "FAIL: the page and the file differ"]);
  }

  const headers = ["case", "expect", ...samples.map((s) => s.name)];
  const widths = headers.map((head, i) => Math.max(head.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join("\n")}\n\n`);
} finally {
  server.kill("SIGTERM");
  await server.exited;
  rmSync(work, { recursive: true, force: true });
}

process.stdout.write(`${passed} passed, ${failed} failed, ${skipped} skipped\n`);
process.exit(failed > 0 ? 1 : 0);
