/**
 * `npm run build`: compiles src/main.ts into the single executable dist/latchkey, with the
 * version stamped in, .env/bunfig autoloading off and bytecode for a faster start.
 *
 *   bun scripts/build.ts                 # dist/latchkey for this machine
 *   bun scripts/build.ts --release       # also linux-arm64, darwin-arm64, windows-x64 in dist/
 *
 * Cross-compiling makes Bun fetch those runtimes from the npm registry.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };

const root = join(import.meta.dir, "..");
const version = process.env.LATCHKEY_VERSION || pkg.version;

const targets: { target?: string; outfile: string }[] = [{ outfile: "dist/latchkey" }];
if (process.argv.includes("--release")) {
  targets.push(
    { target: "bun-linux-arm64", outfile: "dist/latchkey-linux-arm64" },
    { target: "bun-darwin-arm64", outfile: "dist/latchkey-darwin-arm64" },
    { target: "bun-windows-x64", outfile: "dist/latchkey-windows-x64.exe" },
  );
}

mkdirSync(join(root, "dist"), { recursive: true });
for (const { target, outfile } of targets) {
  const args = [
    process.execPath,
    "build",
    "--compile",
    "src/main.ts",
    "--outfile",
    outfile,
    // Not --minify: its whitespace pass puts a method such as `beforeHandle(ctx) {…}` on one line,
    // and Elysia's handler analysis (sucrose), which reads handlers' source text, needs the line
    // break after the parameters; without it, it prints a warning with the code to stdout.
    "--minify-syntax",
    "--minify-identifiers",
    "--sourcemap=none",
    "--bytecode",
    "--define",
    `LATCHKEY_VERSION=${JSON.stringify(version)}`,
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    ...(target ? ["--target", target] : []),
  ];
  const result = Bun.spawnSync(args, { cwd: root, stdout: "inherit", stderr: "inherit", env: { ...process.env, BUN_BE_BUN: "1" } });
  if (result.exitCode !== 0) {
    process.stderr.write(`build failed for ${target ?? "this machine"} (exit ${result.exitCode})\n`);
    process.exit(1);
  }
  process.stdout.write(`built ${outfile} (latchkey ${version})\n`);
}
