/**
 * The wsauth `users.json` format: `{"users":[{username, password_hash, salt, role,
 * allowed_groups}]}` where password_hash = lowercase hex SHA256(password + salt).
 */
import * as v from "valibot";
import { badRequest } from "./errors.ts";
import { group, username } from "./fields.ts";
import { describeIssue, issueField } from "./validation.ts";
import type { Role } from "../db/users.ts";

export interface LegacyUser {
  username: string;
  password_hash: string;
  salt: string;
  role: Role;
  allowed_groups: string[];
}

const entrySchema = v.object({
  // wsauth skips an entry without a username or without a password hash; so does the import.
  username: v.union([v.literal(""), username], "must be a username (letters, digits, . _ - @, at most 64)"),
  password_hash: v.optional(
    v.union(
      [v.literal(""), v.pipe(v.string("must be a string"), v.regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (SHA-256)"))],
      "must be 64 lowercase hex digits (SHA-256)",
    ),
    "",
  ),
  salt: v.optional(v.pipe(v.string("must be a string"), v.maxLength(256, "must be at most 256 characters")), ""),
  // wsauth treats a missing or empty role as viewer.
  role: v.pipe(
    v.optional(v.picklist(["admin", "viewer", ""], "must be admin or viewer"), ""),
    v.transform((role): Role => (role === "" ? "viewer" : role)),
  ),
  allowed_groups: v.optional(v.nullable(v.array(group, "must be a list of group names")), []),
});

/** An entry the import leaves out, and why. */
export interface SkippedEntry {
  name: string;
  reason: string;
}

const fileSchema = v.object({ users: v.array(entrySchema, "must be a list") });

export const MAX_USERS_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Validates a whole users.json before anything is applied. The bootstrap `admin` entry is
 * skipped, as wsauth does: that account is managed here, not by the file.
 */
export function parseUsersFile(text: string): { users: LegacyUser[]; skipped: SkippedEntry[] } {
  if (text.length > MAX_USERS_FILE_BYTES) throw badRequest("users file is larger than 16 MiB");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw badRequest(`users file is not valid JSON: ${(error as Error).message}`);
  }
  const result = v.safeParse(fileSchema, json);
  if (!result.success) {
    const issue = result.issues[0];
    const path = issueField(issue) || "(top level)";
    throw badRequest(`users file: ${describeIssue(issue, path)}`, path);
  }
  const seen = new Set<string>();
  const users: LegacyUser[] = [];
  const skipped: SkippedEntry[] = [];
  for (const [i, entry] of result.output.users.entries()) {
    if (entry.username === "") {
      skipped.push({ name: `users.${i}`, reason: "it has no username" });
      continue;
    }
    const key = entry.username.toLowerCase();
    if (seen.has(key))
      throw badRequest(
        `users file: users.${i}.username ${JSON.stringify(entry.username)} appears twice (names are unique ignoring case)`,
        `users.${i}.username`,
      );
    seen.add(key);
    if (entry.username === "admin") {
      skipped.push({ name: entry.username, reason: "the bootstrap account is managed here, not by users.json" });
      continue;
    }
    if (entry.password_hash === "") {
      skipped.push({ name: entry.username, reason: "its password_hash is empty (wsauth skips such entries too)" });
      continue;
    }
    users.push({ ...entry, allowed_groups: entry.allowed_groups ?? [] });
  }
  return { users, skipped };
}

export function renderUsersFile(users: LegacyUser[]): string {
  return JSON.stringify({ users }, null, 2) + "\n";
}
