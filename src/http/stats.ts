/** REST for the charts: the dashboard's series, and one license key's or application's checks and activations. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { idParam } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import { LICENSING_METRICS, STATS_RANGES, type Metric } from "../core/stats.ts";
import type { SessionPlugin } from "./session.ts";

const rangeQuery = v.strictObject({
  range: v.optional(v.picklist(STATS_RANGES, "must be 24h, 7d or 30d")),
});
const idParams = v.strictObject({ id: idParam });

const SERIES: Record<Metric, string> = {
  checks_ok: "License checks that passed (`GET /api/check` 201)",
  checks_failed: "License checks that failed, throttled ones included",
  activations_ok: "Activations that passed (a machine activating again included)",
  activations_failed: "Activations refused: unknown, disabled or expired key, no seat left, throttled",
  registrations_ok: "Client registrations admitted (`client/register`, reconnections included)",
  registrations_refused: "Client registrations refused",
  logins_failed: "Sign-ins that failed (wrong password or proof, unknown user or token); null for viewers",
  logins_throttled: "Sign-ins refused for too many failures; null for viewers",
  clients_online: "Registered clients connected: the peak of each bucket (sampled every ten seconds)",
  host_reports: "Host reports accepted on the mTLS listener",
};

const values = (description: string) => v.pipe(v.array(v.number()), v.description(description));

function reply<M extends Metric>(metrics: readonly M[], nullable: boolean) {
  const entries = metrics.map((m) => [m, nullable ? v.nullable(values(SERIES[m])) : values(SERIES[m])] as const);
  return v.object({
    range: v.picklist(STATS_RANGES),
    bucket_seconds: v.pipe(
      v.number(),
      v.description("3600 for 24h and 7d; 21600 (six hours, from 00:00, 06:00, 12:00, 18:00 UTC) for 30d"),
    ),
    from: v.pipe(v.string(), v.description("The start of the first bucket, ISO 8601")),
    to: v.pipe(v.string(), v.description("The end of the last bucket (which holds the current hour), ISO 8601")),
    timestamps: v.pipe(v.array(v.number()), v.description("Each bucket's start, seconds since the epoch")),
    series: v.object(Object.fromEntries(entries) as unknown as Record<M, v.GenericSchema<number[] | null>>),
  });
}

const rangeDoc =
  "`range`: `24h` (24 hourly buckets, the default), `7d` (168 hourly buckets) or `30d` (120 six-hour buckets). " +
  "Every series has one value per bucket, 0 where nothing happened; the last bucket holds the current hour. " +
  "Read from hourly roll-ups kept as events happen (kept 400 days), never from the audit log.";

export function statsRoutes(services: Services, session: SessionPlugin) {
  const { stats, licensing } = services;
  return new Elysia({ name: "latchkey/http/stats", prefix: "/api" })
    .use(session)
    .get("/stats", ({ query, principal }) => stats.overview(principal, query.range ?? "24h"), {
      query: rangeQuery,
      access: "viewer",
      response: { 200: reply(Object.keys(SERIES) as Metric[], true) },
      detail: {
        tags: ["stats"],
        summary: "The dashboard's charts",
        description:
          `${rangeDoc} License checks and activations count for everyone; viewers get registrations, clients online and ` +
          "host reports of their groups only (clients online: the sum of their groups' peaks), and no sign-in series (null).",
      },
    })
    .get("/licenses/:id/stats", ({ params, query }) => licensing.licenseStats(params.id, query.range ?? "24h"), {
      params: idParams,
      query: rangeQuery,
      access: "viewer",
      response: { 200: reply(LICENSING_METRICS, false) },
      detail: {
        tags: ["stats"],
        summary: "A license key's checks and activations over time",
        description: `${rangeDoc} A failed check or activation counts for the key its token names. 404 for no such key.`,
      },
    })
    .get("/apps/:id/stats", ({ params, query }) => licensing.appStats(params.id, query.range ?? "24h"), {
      params: idParams,
      query: rangeQuery,
      access: "viewer",
      response: { 200: reply(LICENSING_METRICS, false) },
      detail: {
        tags: ["stats"],
        summary: "The checks and activations of an application's keys over time",
        description: `${rangeDoc} Deleted keys' checks still count for their application. 404 for no such application.`,
      },
    });
}
