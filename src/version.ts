/** Stamped in by `scripts/build.ts` (`--define LATCHKEY_VERSION=...`); "dev" when run from source. */
declare const LATCHKEY_VERSION: string | undefined;

export const VERSION: string = typeof LATCHKEY_VERSION === "string" ? LATCHKEY_VERSION : "dev";
