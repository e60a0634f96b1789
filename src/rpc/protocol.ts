/**
 * The sysadm WebSocket envelope, shared by the server and the client agent:
 * `{"namespace", "name", "id", "args"}` in; replies echo `id` with namespace "rpc" and name
 * "response" or "error"; pushes use namespace "events". The close codes and the registration
 * refusals live in `protocol-codes.ts` (the admin panel imports them without valibot).
 */
import * as v from "valibot";
import type { RefusalReason } from "./protocol-codes.ts";

export * from "./protocol-codes.ts";

export const requestEnvelope = v.strictObject({
  namespace: v.pipe(v.string("must be a string"), v.nonEmpty("is required"), v.maxLength(64, "is too long")),
  name: v.pipe(v.string("must be a string"), v.nonEmpty("is required"), v.maxLength(64, "is too long")),
  id: v.optional(v.union([v.pipe(v.string(), v.maxLength(128, "is too long")), v.number()], "must be a string or number")),
  args: v.optional(v.unknown()),
});

export type RequestEnvelope = v.InferOutput<typeof requestEnvelope>;
export type RequestId = RequestEnvelope["id"];

export interface ResponseEnvelope {
  namespace: "rpc";
  name: "response";
  id: RequestId | null;
  args: unknown;
}

export interface ErrorEnvelope {
  namespace: "rpc";
  name: "error";
  id: RequestId | null;
  args: {
    code: number;
    message: string;
    field?: string;
    retry_after?: number;
    /** A refused `client/register`: why, for the agent to act on (`message` is for people). */
    reason?: RefusalReason;
  };
}

export interface EventEnvelope {
  namespace: "events";
  name: string;
  args: Record<string, unknown>;
}

export function response(id: RequestId | null, args: unknown): ResponseEnvelope {
  return { namespace: "rpc", name: "response", id, args };
}

export function errorEnvelope(id: RequestId | null, args: ErrorEnvelope["args"]): ErrorEnvelope {
  return { namespace: "rpc", name: "error", id, args };
}
