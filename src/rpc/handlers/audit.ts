/** `latchkey/audit`: the audit log, read-only. */
import * as v from "valibot";
import { filterText } from "../../core/fields.ts";
import { defineHandler } from "../registry.ts";

export const auditArgs = v.strictObject({
  action: v.optional(v.literal("list"), "list"),
  actor: v.optional(filterText(128)),
  event: v.optional(filterText(128)),
  outcome: v.optional(v.picklist(["success", "failure", "denied"], "must be success, failure or denied")),
  since: v.optional(v.pipe(v.string(), v.isoTimestamp("must be an ISO 8601 timestamp"))),
  until: v.optional(v.pipe(v.string(), v.isoTimestamp("must be an ISO 8601 timestamp"))),
  limit: v.optional(v.pipe(v.number("must be a number"), v.integer(), v.minValue(1), v.maxValue(1000)), 100),
  offset: v.optional(v.pipe(v.number("must be a number"), v.integer(), v.minValue(0)), 0),
});

export const auditHandler = defineHandler({
  namespace: "latchkey",
  name: "audit",
  access: "session",
  roles: { read: ["admin"], write: [] },
  args: auditArgs,
  handle(ctx, args) {
    return ctx.services.audit.search({
      actor: args.actor,
      action: args.event,
      outcome: args.outcome,
      since: args.since,
      until: args.until,
      limit: args.limit,
      offset: args.offset,
    });
  },
});
