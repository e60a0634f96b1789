/**
 * The OpenAPI document (generated from the routes' valibot schemas) at /openapi/json and
 * /swagger/json, and Swagger UI at /swagger, served from assets embedded in the binary.
 */
import { Elysia } from "elysia";
import { openapi } from "@elysiajs/openapi";
import { toJsonSchema } from "@valibot/to-json-schema";
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "file" };
import { VERSION } from "../version.ts";

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>latchkey API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/swagger/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/swagger/swagger-ui-bundle.js"></script>
<script src="/swagger/init.js"></script>
</body>
</html>
`;

const init = `window.ui = SwaggerUIBundle({ url: "/openapi/json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: false });\n`;

/** The plugin serves one document per path: mounted twice, it answers both spellings. */
function openapiAt(specPath: string) {
  return openapi({
    path: specPath.replace(/\/json$/, "-ui"),
    specPath,
    provider: null,
    // Transforms and regex flags have no JSON Schema form; the rest of each schema still documents.
    mapJsonSchema: { valibot: (schema: Parameters<typeof toJsonSchema>[0]) => toJsonSchema(schema, { errorMode: "ignore" }) },
    exclude: { paths: ["/", "/panel/*", "/swagger", "/swagger/*", "/openapi/json", "/swagger/json"] },
    documentation: {
      info: {
        title: "latchkey",
        version: VERSION,
        description:
          "Client enrollment, authentication and licensing server. Authenticate with `POST /api/auth/login` and send `Authorization: Bearer <token>`. Every RPC is also reachable as `PUT /<namespace>/<name>` with its args as the JSON body.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
  });
}

export function docsRoutes() {
  return new Elysia({ name: "latchkey/http/docs" })
    .use(openapiAt("/openapi/json"))
    .use(openapiAt("/swagger/json"))
    .get("/swagger", () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }), { detail: { hide: true } })
    .get(
      "/swagger/*",
      ({ params, set }) => {
        switch (params["*"]) {
          case "swagger-ui-bundle.js":
            return Bun.file(swaggerBundle);
          case "swagger-ui.css":
            return Bun.file(swaggerCss);
          case "init.js":
            return new Response(init, { headers: { "content-type": "text/javascript; charset=utf-8" } });
          default:
            set.status = 404;
            return { error: { code: "not_found", message: "no such file" } };
        }
      },
      { detail: { hide: true } },
    );
}
