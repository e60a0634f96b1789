/**
 * What the benchmark runners (run.ts, scale-out.ts) share: every child process they start goes
 * through `spawnTracked`, so that `stopAll` can always end it (at the end, on an error, on Ctrl-C),
 * and the small helpers for the servers they measure.
 */
import type { Subprocess } from "bun";
import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..", "..");
export const HOST = "127.0.0.1";

const children = new Set<Subprocess>();
let interrupted = false;

export function spawnTracked(
  cmd: string[],
  options: { env?: Record<string, string | undefined>; log?: string; stdout?: "pipe" } = {},
): Subprocess {
  // One descriptor for both streams, so that stdout and stderr append to the log in order.
  const log = options.log === undefined ? undefined : openSync(options.log, "a");
  const child = Bun.spawn(cmd, {
    cwd: ROOT,
    env: options.env ?? process.env,
    stdin: "ignore",
    stdout: options.stdout ?? log ?? "ignore",
    stderr: log ?? "ignore",
  });
  if (log !== undefined) closeSync(log);
  children.add(child);
  void child.exited.then(() => children.delete(child));
  return child;
}

/** `signal`, then SIGKILL after `graceMs` if it is still there. */
export async function stopProcess(child: Subprocess, signal: "SIGTERM" | "SIGQUIT" = "SIGTERM", graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!exited) {
    child.kill("SIGKILL");
    await child.exited;
  }
}

/** Every child still running. */
export async function stopAll(graceMs?: number): Promise<void> {
  await Promise.all([...children].map((child) => stopProcess(child, "SIGTERM", graceMs)));
}

/** On SIGINT or SIGTERM: says so (as `name`), runs `cleanUp` (every child stopped by default), exits 130. */
export function stopOnSignals(name: string, cleanUp: () => Promise<void> = () => stopAll()): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      interrupted = true;
      process.stderr.write(`\n${name}: ${signal}, stopping everything it started\n`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
}

/** Whether a signal ended the run (its errors are then not worth reporting). */
export function wasInterrupted(): boolean {
  return interrupted;
}

/** A port that was free a moment ago; the binary takes a fixed --listen, so it cannot use port 0. */
export function freePort(): number {
  const probe = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

export function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Polls `url` until it answers 2xx, `pauseMs` between attempts (none by default: a cold start
 * measures this).
 */
export async function waitUntilServing(url: string, child: Subprocess, timeoutMs: number, log?: string, pauseMs = 0): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `the process serving ${url} exited (${child.exitCode ?? child.signalCode}) before answering${log ? `:\n${tail(log)}` : ""}`,
      );
    }
    try {
      const response = await fetch(url, { keepalive: false });
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    if (pauseMs > 0) await Bun.sleep(pauseMs);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms${log ? `:\n${tail(log)}` : ""}`);
}
