/** Where a command writes certificate and key files (`--out DIR`): checked before anything is issued for them. */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { UsageError } from "./args.ts";

/**
 * Makes sure the files can be written before a certificate is issued for them: DIR is a directory
 * this user may write in (created 0700 when missing), and none of `files` exists, unless `force`
 * is true. `force` is null for a command without a --force flag.
 */
export function prepareDirectory(dir: string, files: string[], force: boolean | null): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new UsageError(`${dir} is not a directory; give --out a directory to write the files in`);
  } else {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    throw new Error(`cannot write in ${dir}: permission denied; choose another --out DIR`);
  }
  const taken = files.filter((f) => existsSync(f));
  if (taken.length > 0 && force !== true) {
    const remedy = force === null ? `move ${taken.length === 1 ? "it" : "them"} away` : "add --force to replace";
    throw new UsageError(`${taken.join(", ")} already exist${taken.length === 1 ? "s" : ""}; ${remedy}, or choose another --out DIR`);
  }
}

/** Whether the file at `path` holds exactly `text` (false when it cannot be read). */
export function sameContent(path: string, text: string): boolean {
  try {
    return readFileSync(path, "utf8") === text;
  } catch {
    return false;
  }
}
