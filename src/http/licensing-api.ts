/**
 * The public licensing API of the mini-key-server seed: `POST /api/activate`, `GET /api/check`,
 * plus `POST /api/deactivate` and `GET /api/license/public-key`. Fields come as a form, a query
 * string or JSON; replies carry exactly the seed's status codes and bodies (errors in the seed's
 * `{"result":"failure","error"}` shape, see WIRE_PATHS in errors.ts). The licensing core returns
 * each call's outcome (core/licensing/wire.ts); this file renders it as the seed's reply.
 */
import { Elysia } from "elysia";
import * as v from "valibot";
import { badRequest } from "../core/errors.ts";
import { noNul } from "../core/fields.ts";
import type {
  ActivateOutcome,
  AddressSource,
  CheckOutcome,
  DeactivateOutcome,
  MaybePromise,
  Throttled,
  WireRequest,
} from "../core/licensing/index.ts";
import type { Services } from "../core/services.ts";
import { describeIssue, issueField } from "../core/validation.ts";
import type { SessionPlugin } from "./session.ts";

const text = (max: number) => v.pipe(v.string("must be a string"), v.maxLength(max, `must be at most ${max} characters`), noNul);

const WIRE_FIELD_NAMES = ["token", "app_id", "machine", "user", "hwid", "nonce"] as const;
const WIRE_FIELDS = new Set<string>(WIRE_FIELD_NAMES);
/** The longest each text field may be: the schema, the quick path and the OpenAPI document use these. */
const TOKEN_LIMIT = 128;
const TEXT_LIMITS = { machine: 255, user: 255, hwid: 255, nonce: 128 } as const;
const TEXT_FIELDS = Object.keys(TEXT_LIMITS) as (keyof typeof TEXT_LIMITS)[];

const wireSchema = v.object({
  token: v.pipe(
    v.string("must be a string"),
    v.trim(),
    v.nonEmpty("is required"),
    v.maxLength(TOKEN_LIMIT, `must be at most ${TOKEN_LIMIT} characters`),
    v.toUpperCase(),
  ),
  app_id: v.optional(
    v.pipe(
      v.union(
        [v.number(), v.pipe(v.string(), v.regex(/^\d{1,15}$/), v.transform(Number))],
        "must be a whole number (the application's id)",
      ),
      v.integer("must be a whole number (the application's id)"),
      v.minValue(1, "must be a positive id"),
    ),
  ),
  machine: v.optional(text(TEXT_LIMITS.machine)),
  user: v.optional(text(TEXT_LIMITS.user)),
  hwid: v.optional(text(TEXT_LIMITS.hwid)),
  nonce: v.optional(text(TEXT_LIMITS.nonce)),
});

/** What the route schemas document; the handler merges query and body and validates them together. */
const field = v.optional(v.union([v.string(), v.number()]));
const documented = v.looseObject({ token: field, app_id: field, machine: field, user: field, hwid: field, nonce: field });

/**
 * The common case of wireSchema, checked by hand (checks are the hot path): every field a string
 * within its limit, the token trimmed and upper-cased, app_id digits. Whatever it does not accept
 * (a missing token, a repeated or over-long field, a JSON number) goes to the schema, which decides
 * and words the error; a test holds the two to the same answers.
 */
export function quickWire(fields: Record<string, unknown>): WireRequest | null {
  const token = fields.token;
  if (typeof token !== "string") return null;
  const trimmed = token.trim();
  if (trimmed === "" || trimmed.length > TOKEN_LIMIT) return null;
  const request: WireRequest = { token: trimmed.toUpperCase() };
  for (const name of TEXT_FIELDS) {
    const value = fields[name];
    if (value === undefined || value === "") continue;
    if (typeof value !== "string" || value.length > TEXT_LIMITS[name] || value.includes("\u0000")) return null;
    request[name] = value;
  }
  const appId = fields.app_id;
  if (appId !== undefined && appId !== "") {
    if (typeof appId !== "string" || !/^\d{1,15}$/.test(appId)) return null;
    const id = Number(appId);
    if (id < 1) return null;
    request.app_id = id;
  }
  return request;
}

/**
 * Merges query and body (the body wins), treats empty fields as absent, and validates. Neither
 * `hwid` nor `machine` is well-formed input: a check without them fails (404), while activate and
 * deactivate, which need a machine for the seat, refuse them (400, core/licensing/wire.ts).
 */
export function parseWire(query: Record<string, unknown>, body: unknown): WireRequest {
  if (body === undefined) {
    const quick = quickWire(query);
    if (quick) return quick;
  }
  // No prototype: a field named __proto__ is then just a field.
  const merged: Record<string, unknown> = Object.create(null);
  const sources = [query, typeof body === "object" && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {}];
  for (const source of sources) for (const [k, value] of Object.entries(source)) if (value !== "" && value !== undefined) merged[k] = value;
  const result = v.safeParse(wireSchema, merged);
  if (!result.success) {
    const issue = result.issues[0];
    const name = issueField(issue) || "token";
    throw badRequest(describeIssue(issue, name), name);
  }
  return result.output;
}

/**
 * The fields of a URL's query string, for `GET /api/check`, which is served outside Elysia's
 * pipeline (check-route.ts) and so reads its query itself.
 * `+` is a space; a field given twice becomes an array, which parseWire refuses; a field whose
 * percent-encoding is broken is refused by name.
 */
export function queryFields(url: string): Record<string, string | string[]> {
  const fields: Record<string, string | string[]> = Object.create(null);
  const start = url.indexOf("?");
  if (start === -1) return fields;
  const end = url.indexOf("#", start);
  const query = end === -1 ? url.slice(start + 1) : url.slice(start + 1, end);
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = decodeField(eq === -1 ? part : part.slice(0, eq), null);
    const value = eq === -1 ? "" : decodeField(part.slice(eq + 1), key);
    const previous = fields[key];
    if (previous === undefined) fields[key] = value;
    else if (Array.isArray(previous)) previous.push(value);
    else fields[key] = [previous, value];
  }
  return fields;
}

function decodeField(raw: string, key: string | null): string {
  const text = raw.includes("+") ? raw.replaceAll("+", " ") : raw;
  if (!text.includes("%")) return text;
  try {
    return decodeURIComponent(text);
  } catch {
    throw key === null
      ? badRequest("the query string has a field name that is not valid URL encoding", "query")
      : badRequest(`${key} is not valid URL encoding`, key);
  }
}

/** A reply of the public licensing API: status and body exactly as the seed documents them. */
export interface WireReply {
  readonly status: number;
  readonly body: Readonly<Record<string, unknown>>;
  readonly retryAfter?: number;
}

/** A check's reply with its body serialized: the check route writes it as it is. */
export interface CheckReply extends WireReply {
  readonly json: string;
}

function failure(status: number, error: string, supportMessage?: string): WireReply {
  return {
    status,
    body: supportMessage === undefined ? { result: "failure", error } : { result: "failure", error, support_message: supportMessage },
  };
}

function throttled(outcome: Throttled): WireReply {
  const wait = outcome.retryAfter;
  return {
    status: 429,
    retryAfter: wait,
    body: { result: "failure", error: `${outcome.reason}; retry in ${wait} s`, retry_after: wait, support_message: outcome.supportMessage },
  };
}

function activateReply(outcome: ActivateOutcome): WireReply {
  switch (outcome.kind) {
    case "ok":
      return { status: 201, body: { result: "ok", remainingActivations: outcome.remaining, receipt: outcome.receipt } };
    case "invalid":
      return failure(404, "invalid activation token", outcome.supportMessage);
    case "expired":
      return failure(410, "key is no longer valid", outcome.supportMessage);
    case "full":
      return failure(410, "key is out of activations", outcome.supportMessage);
    case "throttled":
      return throttled(outcome);
  }
}

function checkReply(outcome: CheckOutcome): WireReply {
  switch (outcome.kind) {
    case "ok":
      return { status: 201, body: { result: "ok", receipt: outcome.receipt } };
    case "invalid":
      return failure(404, "invalid key", outcome.supportMessage);
    case "expired":
      return failure(410, "key is no longer valid", outcome.supportMessage);
    case "throttled":
      return throttled(outcome);
  }
}

function deactivateReply(outcome: DeactivateOutcome): WireReply {
  switch (outcome.kind) {
    case "ok":
      return { status: 200, body: { result: "ok", remainingActivations: outcome.remaining } };
    case "invalid":
      return failure(404, "invalid key");
    case "not-activated":
      return failure(404, "machine is not activated");
    case "throttled":
      return throttled(outcome);
  }
}

/**
 * Check replies by outcome. The licensing core hands the same outcome out again while it stands
 * (a machine's nonce-less receipt for up to a minute, an application's failed checks until it
 * changes), so each is rendered and serialized once rather than on every check (a receipt is ~330
 * bytes of JSON); the replies of one-off outcomes go with them.
 */
const checkReplies = new WeakMap<CheckOutcome, CheckReply>();

function renderedCheck(outcome: CheckOutcome): CheckReply {
  let reply = checkReplies.get(outcome);
  if (reply === undefined) {
    const rendered = checkReply(outcome);
    checkReplies.set(outcome, (reply = { ...rendered, json: JSON.stringify(rendered.body) }));
  }
  return reply;
}

/** An activation, rendered and counted in /metrics. */
async function activateRequest(services: Services, request: WireRequest, address: string | null): Promise<WireReply> {
  const reply = activateReply(await services.licensing.activate(request, address));
  services.metrics.licensing("activate", String(reply.status));
  return reply;
}

/**
 * A check from the request's query string, rendered and counted in /metrics: at once when the
 * licensing core answers from its check cache, a promise when it reads the database.
 */
export function checkRequest(services: Services, request: Request, address: AddressSource): MaybePromise<CheckReply> {
  const url = request.url;
  const outcome = services.licensing.check(quickQuery(url) ?? parseWire(queryFields(url), undefined), address);
  if (outcome instanceof Promise) return outcome.then((read) => countedCheck(services, read));
  return countedCheck(services, outcome);
}

function countedCheck(services: Services, outcome: CheckOutcome): CheckReply {
  const reply = renderedCheck(outcome);
  services.metrics.licensing("check", String(reply.status));
  return reply;
}

/** A deactivation, rendered and counted in /metrics. */
async function deactivateRequest(services: Services, request: WireRequest, address: string | null): Promise<WireReply> {
  const reply = deactivateReply(await services.licensing.deactivate(request, address));
  services.metrics.licensing("deactivate", String(reply.status));
  return reply;
}

/**
 * The common query string of a check read straight into its fields: nothing encoded (no `%`,
 * no `+`), the wire fields at most once each, others skipped unread. Anything else returns null
 * and takes the general path (queryFields, then the schema), which decodes and words errors; a
 * test holds the two to the same answers.
 */
export function quickQuery(url: string): WireRequest | null {
  const start = url.indexOf("?");
  if (start === -1 || url.includes("%", start) || url.includes("+", start) || url.includes("#", start)) return null;
  const fields: Record<string, string> = Object.create(null);
  for (let at = start + 1; at < url.length;) {
    let end = url.indexOf("&", at);
    if (end === -1) end = url.length;
    const eq = url.indexOf("=", at);
    if (eq !== -1 && eq < end) {
      const name = url.slice(at, eq);
      if (WIRE_FIELDS.has(name)) {
        if (name in fields) return null;
        fields[name] = url.slice(eq + 1, end);
      }
    } else if (end > at && WIRE_FIELDS.has(url.slice(at, end))) return null;
    at = end + 1;
  }
  return quickWire(fields);
}

type ReplySet = { status?: number | string; headers: Record<string, string | number> };

/** Once the reply is ready: its status and Retry-After on `set`, its body returned. */
async function send(pending: Promise<WireReply>, set: ReplySet) {
  const reply = await pending;
  set.status = reply.status;
  if (reply.retryAfter !== undefined) set.headers["retry-after"] = String(reply.retryAfter);
  return reply.body;
}

/** The check route's query fields, documented by hand since the route has no query schema. */
const wireParameters = WIRE_FIELD_NAMES.map((name) => ({
  name,
  in: "query" as const,
  required: name === "token",
  schema:
    name === "app_id"
      ? { type: "integer" as const, minimum: 1 }
      : { type: "string" as const, maxLength: name === "token" ? TOKEN_LIMIT : TEXT_LIMITS[name] },
}));

const fieldsDoc =
  "Fields `token`, `app_id`, `machine`, `user`, `hwid` " +
  "(and optional `nonce`, echoed in the receipt) as form fields, query string or JSON. " +
  "`hwid` identifies the machine (its `machine` name stands in when there is none).";

export function licensingApiRoutes(services: Services, session: SessionPlugin) {
  const licensing = services.licensing;
  return (
    new Elysia({ name: "latchkey/http/licensing-api", prefix: "/api" })
      .use(session)
      .post("/activate", ({ query, body, set, address }) => send(activateRequest(services, parseWire(query, body), address), set), {
        query: documented,
        body: v.optional(documented),
        public: true,
        detail: {
          tags: ["licensing"],
          summary: "Activate a license key on a machine",
          description:
            `${fieldsDoc} 201 \`{"result":"ok","remainingActivations":N,"receipt":JWS}\` ` +
            `(-1 = unlimited; a machine already activated uses no seat); ` +
            `404 \`invalid activation token\`; 410 \`key is out of activations\` or \`key is no longer valid\`; ` +
            `failures carry the application's \`support_message\`. ` +
            `400 naming the field for malformed input, and when neither \`hwid\` nor \`machine\` is given (the seat needs a machine). ` +
            `429 with Retry-After when throttled.`,
        },
      })
      // GET is served by Bun's router (check-route.ts); this route documents it and answers HEAD.
      .get(
        "/check",
        async ({ request, set, address }) => {
          const reply = await checkRequest(services, request, address);
          set.status = reply.status;
          if (reply.retryAfter !== undefined) set.headers["retry-after"] = String(reply.retryAfter);
          return reply.body;
        },
        {
          public: true,
          detail: {
            parameters: wireParameters,
            tags: ["licensing"],
            summary: "Check that a machine's activation is valid",
            description:
              `${fieldsDoc} 201 \`{"result":"ok","receipt":JWS}\` for every activated machine; ` +
              `otherwise 404 \`{"result":"failure","error":"invalid key"}\` (410 \`key is no longer valid\` once expired), ` +
              `a check with neither \`hwid\` nor \`machine\` included. ` +
              `With \`app_id\`, a failure also carries that application's \`support_message\` ` +
              `(\`""\` when the id names no application or the application has none); without it, the body is exactly the seed's. ` +
              `400 naming the field only for malformed input ` +
              `(too long, badly encoded, repeated, an \`app_id\` that is not a positive whole number). ` +
              `429 with Retry-After when throttled.`,
          },
        },
      )
      .post("/deactivate", ({ query, body, set, address }) => send(deactivateRequest(services, parseWire(query, body), address), set), {
        query: documented,
        body: v.optional(documented),
        public: true,
        detail: {
          tags: ["licensing"],
          summary: "Free a machine's seat",
          description:
            `${fieldsDoc} ` +
            `200 \`{"result":"ok","remainingActivations":N}\`; ` +
            `404 when the key or the machine's activation is unknown.`,
        },
      })
      .get(
        "/license/public-key",
        ({ query }) => {
          const key = licensing.publicKey();
          if (query.format === "pem") return new Response(key.public_key, { headers: { "content-type": "application/x-pem-file" } });
          return key;
        },
        {
          query: v.strictObject({ format: v.optional(v.picklist(["json", "pem"], "must be json or pem")) }),
          public: true,
          detail: {
            tags: ["licensing"],
            summary: "The public key that verifies license receipts",
            description: "Ed25519 (JWS alg EdDSA), SPKI PEM. `?format=pem` returns the bare PEM file.",
          },
        },
      )
  );
}
