/** REST audit log: filter, page, or export as JSON lines. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { filterText, limit, offset } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const timestamp = v.optional(v.pipe(v.string(), v.isoTimestamp("must be an ISO 8601 timestamp")));

export function auditRoutes(services: Services, session: SessionPlugin) {
  return new Elysia({ name: "latchkey/http/audit", prefix: "/api/audit" }).use(session).get(
    "",
    ({ query }) => {
      const filter = { actor: query.actor, action: query.action, outcome: query.outcome, since: query.since, until: query.until };
      if (query.format === "jsonl") {
        const lines = services.audit.export(filter);
        const encoder = new TextEncoder();
        const stream = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const next = await lines.next();
            if (next.done) controller.close();
            else controller.enqueue(encoder.encode(JSON.stringify(next.value) + "\n"));
          },
        });
        return new Response(stream, {
          headers: { "content-type": "application/x-ndjson", "content-disposition": 'attachment; filename="audit.jsonl"' },
        });
      }
      return services.audit.search({ ...filter, limit: query.limit ?? 100, offset: query.offset ?? 0 });
    },
    {
      query: v.strictObject({
        actor: v.optional(filterText(128)),
        action: v.optional(filterText(128)),
        outcome: v.optional(v.picklist(["success", "failure", "denied"], "must be success, failure or denied")),
        since: timestamp,
        until: timestamp,
        limit,
        offset,
        format: v.optional(v.picklist(["json", "jsonl"], "must be json or jsonl")),
      }),
      access: "admin",
      detail: {
        tags: ["audit"],
        summary: "Audit log",
        description:
          "Newest first, filterable by actor, action, outcome and time. " +
          "`format=jsonl` exports every matching entry, oldest first, as JSON lines.",
      },
    },
  );
}
