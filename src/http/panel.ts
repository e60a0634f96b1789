/** The admin panel: static files embedded in the binary, no CDN. */
import { Elysia } from "elysia";
import { createHash } from "node:crypto";
import { bundlePanel } from "./panel-bundle.ts" with { type: "macro" };
import indexHtml from "../../assets/panel/index.html" with { type: "text" };
import appCss from "../../assets/panel/app.css" with { type: "text" };
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import type { SessionPlugin } from "./session.ts";

const appJs: string = bundlePanel();

interface Asset {
  body: string;
  type: string;
  etag: string;
}

function asset(body: string, type: string): Asset {
  return { body, type, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 16)}"` };
}

const files: Record<string, Asset> = {
  "app.js": asset(appJs, "text/javascript; charset=utf-8"),
  // uPlot's own rules first, so that the panel's chart styles (the end of app.css) win.
  "app.css": asset(`${uplotCss}\n${appCss}`, "text/css; charset=utf-8"),
};
// @types/bun types .html imports as HTML bundles; with type "text" it is the file's text.
const index = asset(indexHtml as unknown as string, "text/html; charset=utf-8");

function serve(file: Asset, request: Request, cache: string): Response {
  if (request.headers.get("if-none-match") === file.etag) return new Response(null, { status: 304, headers: { etag: file.etag } });
  return new Response(file.body, { headers: { "content-type": file.type, etag: file.etag, "cache-control": cache } });
}

export function panelRoutes(session: SessionPlugin) {
  return new Elysia({ name: "latchkey/http/panel" })
    .use(session)
    .get("/", ({ request }) => serve(index, request, "no-cache"), { public: true, detail: { hide: true } })
    .get(
      "/panel/*",
      ({ params, request, set }) => {
        const file = Object.hasOwn(files, params["*"]) ? files[params["*"]] : undefined;
        if (!file) {
          set.status = 404;
          return { error: { code: "not_found", message: "no such file" } };
        }
        return serve(file, request, "no-cache");
      },
      { public: true, detail: { hide: true } },
    );
}
