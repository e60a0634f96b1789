/** Liveness with a database check, and Prometheus metrics. */
import { Elysia } from "elysia";
import type { Services } from "../core/services.ts";
import { VERSION } from "../version.ts";
import type { SessionPlugin } from "./session.ts";

export function opsRoutes(services: Services, session: SessionPlugin) {
  const check = services.db.query<{ ok: number }, []>("SELECT 1 AS ok");
  return new Elysia({ name: "latchkey/http/ops" })
    .use(session)
    .get(
      "/healthz",
      ({ set }) => {
        let database = "ok";
        try {
          check.get();
        } catch (error) {
          database = `error: ${(error as Error).message}`;
          set.status = 503;
        }
        return { status: database === "ok" ? "ok" : "unavailable", database, version: VERSION };
      },
      { public: true, detail: { tags: ["operations"], summary: "Liveness and database check" } },
    )
    .get(
      "/metrics",
      () => new Response(services.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } }),
      { public: true, detail: { tags: ["operations"], summary: "Prometheus metrics" } },
    );
}
