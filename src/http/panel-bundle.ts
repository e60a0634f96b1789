/**
 * Bun macro: bundles the admin panel's TypeScript at build time (and when run from source), so
 * that the binary carries one ready JavaScript file. It shells out to `bun build` because a
 * macro may not call Bun.build while the bundler waits on it.
 */
import { join } from "node:path";

export function bundlePanel(): string {
  const entry = join(import.meta.dir, "../../assets/panel/main.ts");
  const result = Bun.spawnSync([process.execPath, "build", entry, "--format=esm", "--target=browser", "--minify"], {
    env: { ...process.env, BUN_BE_BUN: "1" },
  });
  if (result.exitCode !== 0) throw new Error(`panel bundle failed:\n${result.stderr.toString()}`);
  return result.stdout.toString();
}
