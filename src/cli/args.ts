/**
 * A small argv parser that accepts both the woho seed's `-flag value` and the usual
 * `--flag value` / `--flag=value` forms. Flags are declared up front so that a typo is an error
 * with a remedy rather than a silently ignored option.
 */
import * as v from "valibot";
import { AppError } from "../core/errors.ts";

export interface FlagSpec {
  /** Flag name without dashes, e.g. "data-dir". */
  name: string;
  /** Boolean flags take no value; `--flag=false` turns them off. */
  boolean?: boolean;
  /** Flags that may be given several times collect every value. */
  repeat?: boolean;
  help: string;
  /** Placeholder shown in help, e.g. "DIR". */
  value?: string;
}

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positionals: string[];
  help: boolean;
  /** Each given flag as the user wrote it (`-count` or `--count`), so that messages echo it. */
  spelled: Map<string, string>;
}

export class UsageError extends AppError {
  constructor(message: string) {
    super("bad_request", message);
    this.name = "UsageError";
  }
}

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const flags = new Map<string, string[]>();
  const spelled = new Map<string, string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq === -1 ? body : body.slice(0, eq);
    if (name === "help" || name === "h") {
      help = true;
      continue;
    }
    // Without its value, which may be a secret given to a misspelled flag.
    const typed = shown(eq === -1 ? arg : arg.slice(0, arg.indexOf("=")));
    const spec = byName.get(name);
    if (!spec) {
      throw new UsageError(`unknown flag ${typed}; run with --help to see the flags this command takes`);
    }
    let value: string;
    if (eq !== -1) {
      value = body.slice(eq + 1);
    } else if (spec.boolean) {
      value = "true";
    } else {
      const next = argv[i + 1];
      const nextIsFlag = next !== undefined && /^--?[a-z]/.test(next) && byName.has(next.replace(/^--?/, "").split("=")[0]!);
      if (next === undefined || nextIsFlag) throw new UsageError(`flag ${typed} needs a value (${spec.value ?? "VALUE"})`);
      value = next;
      i++;
    }
    if (spec.boolean && !["true", "false", "1", "0"].includes(value)) {
      throw new UsageError(`flag ${typed} is a switch: give it alone, or as ${typed}=true / ${typed}=false`);
    }
    const list = flags.get(name) ?? [];
    if (list.length > 0 && !spec.repeat) throw new UsageError(`flag ${typed} was given more than once`);
    list.push(value);
    flags.set(name, list);
    spelled.set(name, typed);
  }
  return { flags, positionals, help, spelled };
}

/** Printable text as it is; anything else quoted, so that an echo cannot play tricks on a terminal. */
function shown(text: string): string {
  return /^[\x21-\x7e]+$/.test(text) ? text : JSON.stringify(text);
}

/** A flag as the user wrote it, for messages about its value; `--name` when it was not given. */
export function spelledFlag(args: ParsedArgs, name: string): string {
  return args.spelled.get(name) ?? `--${name}`;
}

export function flagValue(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.at(-1);
}

export function flagBool(args: ParsedArgs, name: string): boolean | undefined {
  const value = flagValue(args, name);
  return value === undefined ? undefined : value === "true" || value === "1";
}

export function renderHelp(usage: string, description: string, specs: readonly FlagSpec[]): string {
  const lines = [`Usage: ${usage}`, "", description];
  if (specs.length > 0) {
    lines.push("", "Flags (each also accepted as -flag):");
    const rows = specs.map((s) => [`--${s.name}${s.boolean ? "" : ` ${s.value ?? "VALUE"}`}`, s.help] as const);
    const width = Math.max(...rows.map(([left]) => left.length));
    for (const [left, right] of rows) lines.push(`  ${left.padEnd(width)}  ${right}`);
  }
  lines.push("", "  --help  show this help");
  return lines.join("\n") + "\n";
}

/** Validates a flag or argument with a field schema; a failure is a usage error naming it. */
export function check<S extends v.GenericSchema>(schema: S, value: unknown, what: string): v.InferOutput<S> {
  const result = v.safeParse(schema, value);
  if (!result.success) throw new UsageError(`${what} ${result.issues[0].message}`);
  return result.output;
}
