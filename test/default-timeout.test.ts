/**
 * The suite's default per-test timeout is in force. End-to-end tests start servers, a browser and
 * the compiled binary, which on a busy 2-core machine can take longer than Bun's built-in 5 s.
 * The default is raised by `bun test --timeout 60000` in scripts/test.sh (package.json's test script), as Bun
 * reads no timeout from bunfig.toml. This test sets no timeout of its own and takes a little
 * over 5 s, so it times out whenever the suite runs without that setting.
 */
import { expect, test } from "bun:test";

test("a test may take longer than Bun's built-in 5 s (run the suite with npm test)", async () => {
  const started = performance.now();
  // The sleep is what is tested: longer than Bun's built-in 5 s.
  await Bun.sleep(5_100);
  expect(performance.now() - started).toBeGreaterThan(5_000);
});
