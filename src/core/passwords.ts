import { AppError } from "./errors.ts";
import { sha256Hex } from "./secrets.ts";
import { deriveScramCredentials, type ScramCredentials } from "./scram.ts";

/** argon2id at the OWASP minimum (19 MiB, 2 passes); Bun hashes on a worker thread. */
const ARGON2 = { algorithm: "argon2id", memoryCost: 19456, timeCost: 2 } as const;

export interface PasswordVerifiers {
  passwordHash: string;
  scram: ScramCredentials;
}

/** Both verifiers for a password input (the password itself, or a legacy hash standing in for it). */
export async function makeVerifiers(input: string): Promise<PasswordVerifiers> {
  const [passwordHash, scram] = await Promise.all([Bun.password.hash(input, ARGON2), deriveScramCredentials(input)]);
  return { passwordHash, scram };
}

export function verifyPassword(input: string, passwordHash: string): Promise<boolean> {
  return Bun.password.verify(input, passwordHash);
}

/** A verifier that never matches, so an unknown user costs as much as a known one. */
let decoyHash: Promise<string> | undefined;
export async function burnDecoyVerification(input: string): Promise<void> {
  decoyHash ??= Bun.password.hash(crypto.randomUUID(), ARGON2);
  await Bun.password.verify(input, await decoyHash);
}

/** The wsauth stored hash: lowercase hex SHA256(password + salt). */
export function legacyHash(password: string, salt: string): string {
  return sha256Hex(password + salt);
}

/** What a user's verifiers were made from: the password, or its legacy hash for imported accounts. */
export function passwordInput(password: string, legacySalt: string | null): string {
  return legacySalt === null ? password : legacyHash(password, legacySalt);
}

export interface VerifyQueueLimits {
  /** Verifications running at once (argon2id uses a core each). */
  concurrency: number;
  /** Callers (source addresses) that may have work waiting at once. */
  maxLanes: number;
  /** Verifications one caller may have waiting or running. */
  perLane: number;
}

interface Job {
  run: () => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Bounds the password-hashing work. Each caller (source address) has a lane of its own, and lanes
 * take turns, so that a burst of guesses from some addresses delays another address's login by
 * at most one verification per busy lane; past the caps the caller is told to retry (503).
 */
export class VerifyQueue {
  private readonly lanes = new Map<string, Job[]>();
  /** Per lane, its jobs waiting or running (a lane is freed when this drops to 0). */
  private readonly load = new Map<string, number>();
  private running = 0;

  constructor(private readonly limits: VerifyQueueLimits) {}

  /** Verifications waiting or running, for metrics and tests. */
  get size(): number {
    let n = 0;
    for (const count of this.load.values()) n += count;
    return n;
  }

  run<T>(lane: string, work: () => Promise<T>): Promise<T> {
    const load = this.load.get(lane) ?? 0;
    if (load >= this.limits.perLane || (load === 0 && this.load.size >= this.limits.maxLanes)) {
      return Promise.reject(new AppError("unavailable", "the server is busy checking other logins; retry in a second", { retryAfter: 1 }));
    }
    this.load.set(lane, load + 1);
    return new Promise<T>((resolve, reject) => {
      let jobs = this.lanes.get(lane);
      if (!jobs) this.lanes.set(lane, (jobs = []));
      jobs.push({ run: work, resolve: resolve as (value: unknown) => void, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.running < this.limits.concurrency && this.lanes.size > 0) {
      // The first lane in Map order goes next, and then to the back of the line.
      const [lane, jobs] = this.lanes.entries().next().value!;
      const job = jobs.shift()!;
      this.lanes.delete(lane);
      if (jobs.length > 0) this.lanes.set(lane, jobs);
      this.running++;
      job
        .run()
        .then(job.resolve, job.reject)
        .finally(() => {
          this.running--;
          const left = this.load.get(lane)! - 1;
          if (left === 0) this.load.delete(lane);
          else this.load.set(lane, left);
          this.pump();
        });
    }
  }
}
