/**
 * One way to turn a valibot issue into a field name and a sentence, for every entry point
 * (REST bodies, RPC args, WebSocket envelopes, users.json, the config).
 */
export interface IssueLike {
  path?: { key?: unknown }[] | undefined;
  message?: string | undefined;
  expected?: string | null | undefined;
  received?: string | undefined;
}

export function issueField(issue: IssueLike | undefined): string {
  return issue?.path?.map((p) => String(p.key)).join(".") ?? "";
}

/** "name is required", "name is not a known field", or "name <valibot's message>". */
export function describeIssue(issue: IssueLike | undefined, field: string): string {
  if (issue?.expected === "never") return `${field} is not a known field`;
  if (issue?.path?.length && issue.received === "undefined") return `${field} is required`;
  return `${field} ${issue?.message ?? "is invalid"}`;
}
