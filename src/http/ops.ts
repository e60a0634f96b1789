/** Liveness with a database check, and Prometheus metrics. */
import { Elysia } from "elysia";
import type { Services } from "../core/services.ts";
import { VERSION } from "../version.ts";
import type { SessionPlugin } from "./session.ts";

export function opsRoutes(services: Services, session: SessionPlugin) {
  return new Elysia({ name: "latchkey/http/ops" })
    .use(session)
    .get(
      "/healthz",
      async ({ set }) => {
        const health = await services.storage.health();
        if (!health.ok) {
          set.status = 503;
          set.headers["retry-after"] = "5";
        }
        return { status: health.ok ? "ok" : "unavailable", database: health.detail, backend: health.backend, version: VERSION };
      },
      { public: true, detail: { tags: ["operations"], summary: "Liveness and database check" } },
    )
    .get(
      "/metrics",
      async () =>
        new Response(await services.metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } }),
      { public: true, detail: { tags: ["operations"], summary: "Prometheus metrics" } },
    );
}
