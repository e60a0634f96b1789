/**
 * The code is kept in one format (Prettier, .prettierrc.json): `npm run format` writes it, and this
 * test, part of `npm test` and so of CI, fails when a file strays.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT } from "./support.ts";

test("every file is formatted as `npm run format` leaves it", () => {
  const prettier = join(ROOT, "node_modules", "prettier", "bin", "prettier.cjs");
  const run = Bun.spawnSync([process.execPath, prettier, "--check", "--log-level", "warn", "."], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const unformatted = (run.stdout.toString() + run.stderr.toString()).trim();
  expect({ exitCode: run.exitCode, unformatted }).toEqual({ exitCode: 0, unformatted: "" });
});
