/**
 * The code is kept in one format (Prettier, .prettierrc.json): `npm run format` writes it, and this
 * test, part of `npm test` and so of CI, fails when a file strays. Prettier does not break string
 * literals, template literals or comments, so a second test holds every line of the code to the
 * print width: a longer text is split into a concatenation, a longer comment onto more lines.
 */
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
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
}, 180_000); // about 10 s on a quiet machine; a busy one has taken over 60

test("no line of a tracked .ts or .mjs file is longer than the print width", () => {
  const { printWidth } = JSON.parse(readFileSync(join(ROOT, ".prettierrc.json"), "utf8")) as { printWidth: number };
  const listed = Bun.spawnSync(["git", "ls-files", "-z", "*.ts", "*.mjs"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  expect({ exitCode: listed.exitCode, stderr: listed.stderr.toString() }).toEqual({ exitCode: 0, stderr: "" });
  const files = listed.stdout.toString().split("\0").filter(Boolean);
  expect(files.length).toBeGreaterThan(0);
  const tooLong: string[] = [];
  for (const file of files) {
    // A file deleted in the working tree but not yet in the index has no lines to hold.
    if (!existsSync(join(ROOT, file))) continue;
    readFileSync(join(ROOT, file), "utf8")
      .split("\n")
      .forEach((line, i) => {
        const length = [...line].length;
        if (length > printWidth) tooLong.push(`${file}:${i + 1} (${length} characters)`);
      });
  }
  expect(tooLong).toEqual([]);
});
