import { createHash } from "node:crypto";
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
  return createHash("sha256").update(password + salt).digest("hex");
}

/** What a user's verifiers were made from: the password, or its legacy hash for imported accounts. */
export function passwordInput(password: string, legacySalt: string | null): string {
  return legacySalt === null ? password : legacyHash(password, legacySalt);
}
