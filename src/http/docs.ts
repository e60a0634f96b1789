/**
 * The OpenAPI document (generated from the routes' valibot schemas) at /openapi/json and
 * /swagger/json, and Swagger UI at /swagger, served from assets embedded in the binary.
 */
import { Elysia, type AnyElysia } from "elysia";
import { toOpenAPISchema } from "@elysiajs/openapi";
import { toJsonSchema } from "@valibot/to-json-schema";
import swaggerBundle from "swagger-ui-dist/swagger-ui-bundle.js" with { type: "file" };
import swaggerCss from "swagger-ui-dist/swagger-ui.css" with { type: "file" };
import { VERSION } from "../version.ts";
import { BEARER_SCHEME, type SessionPlugin } from "./session.ts";

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

const init =
  `window.ui = SwaggerUIBundle({ ` +
  `url: "/openapi/json", dom_id: "#swagger-ui", ` +
  `deepLinking: true, persistAuthorization: false });\n`;

/** Routes that are not API calls: the panel, the docs themselves. */
const exclude = { staticFile: false, paths: ["/", "/panel/*", "/swagger", "/swagger/*", "/openapi/json", "/swagger/json"] };

// Transforms and regex flags have no JSON Schema form; the rest of each schema still documents.
const mapJsonSchema = { valibot: (schema: Parameters<typeof toJsonSchema>[0]) => toJsonSchema(schema, { errorMode: "ignore" }) };

const documentation = {
  info: {
    title: "latchkey",
    version: VERSION,
    description:
      "Client enrollment, authentication and licensing server. " +
      "Authenticate with `POST /api/auth/login` and send `Authorization: Bearer <token>`. " +
      "Every RPC is also reachable as `PUT /<namespace>/<name>` with its args as the JSON body.",
  },
  // Each operation says its own security (from its route's access declaration); this default holds for none.
  components: { securitySchemes: { bearer: BEARER_SCHEME } },
  security: [{ bearer: [] }],
};

/**
 * The OpenAPI document of the whole app, built by the OpenAPI plugin's generator from the routes'
 * schemas, once per set of routes. (The plugin's own routes are not used: a route must declare its
 * access, which the plugin's cannot, and under a guard the plugin sees only the guard's routes.)
 */
function openapiDocument(root: () => AnyElysia) {
  let built: { routes: number; document: object } | undefined;
  return () => {
    const app = root();
    if (built?.routes === app.routes.length) return built.document;
    const { paths, components } = toOpenAPISchema(app, exclude, undefined, mapJsonSchema);
    const document = {
      ...documentation,
      openapi: "3.1.2",
      paths,
      components: { ...documentation.components, schemas: components.schemas },
    };
    built = { routes: app.routes.length, document };
    return document;
  };
}

export function docsRoutes(session: SessionPlugin, root: () => AnyElysia) {
  const document = openapiDocument(root);
  return new Elysia({ name: "latchkey/http/docs" })
    .use(session)
    .get("/openapi/json", () => document(), { public: true, detail: { hide: true } })
    .get("/swagger/json", () => document(), { public: true, detail: { hide: true } })
    .get("/swagger", () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }), {
      public: true,
      detail: { hide: true },
    })
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
      { public: true, detail: { hide: true } },
    );
}
