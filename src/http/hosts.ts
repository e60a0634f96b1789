/** REST for hosts (woodstock seed, SPEC §5): registered hostnames, their reports, and certificate bundles for outside clients. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { group, hostname, limit, offset } from "../core/fields.ts";
import { woodstockFiles } from "../core/hosts.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const hostParams = v.strictObject({ hostname });

/** What `POST /api/hosts/{hostname}/bundle` answers: the OpenAPI document is generated from it. */
const bundleReply = v.object({
  hostname: v.pipe(v.string(), v.description("The host, lower-case: the certificate's CN and SAN")),
  serial: v.pipe(v.string(), v.description("The certificate's serial, hex")),
  not_after: v.pipe(v.string(), v.description("When the certificate expires, ISO 8601")),
  key: v.pipe(v.string(), v.description("The private key, PKCS#8 PEM: in this reply only, stored nowhere")),
  certificate: v.pipe(v.string(), v.description("The host's certificate, PEM")),
  ca: v.pipe(v.string(), v.description("The root CA certificate, PEM (as GET /api/ca.pem)")),
  files: v.pipe(
    v.record(v.string(), v.string()),
    v.description("The same three PEMs under the woodstock file names: <hostname>_https.key, <hostname>_https.pem, rootCA.pem"),
  ),
});

export function hostRoutes(services: Services, session: SessionPlugin) {
  const hosts = services.hosts;
  return new Elysia({ name: "latchkey/http/hosts", prefix: "/api/hosts" })
    .use(session)
    .get(
      "",
      ({ query, principal }) =>
        hosts.listHosts(principal, { group: query.group, status: query.status }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({
          group: v.optional(group),
          status: v.optional(v.picklist(["online", "offline"], "must be online or offline")),
          limit,
          offset,
        }),
        access: "viewer",
        detail: {
          tags: ["hosts"],
          summary: "List hosts",
          description:
            "By hostname. A host is online while its last report is within three report intervals. " +
            "Viewers see the hosts of their groups only.",
        },
      },
    )
    .post(
      "",
      ({ body, set, actor }) => {
        set.status = 201;
        return hosts.registerHost(actor, body.hostname, body.group ?? null);
      },
      {
        body: v.strictObject({ hostname, group: v.optional(group) }),
        access: "admin",
        detail: {
          tags: ["hosts"],
          summary: "Register a host",
          description: "An RFC 1123 hostname, kept lower-case. A host already registered: 409.",
        },
      },
    )
    .get("/:hostname", ({ params, principal }) => hosts.getHost(principal, params.hostname), {
      params: hostParams,
      access: "viewer",
      detail: {
        tags: ["hosts"],
        summary: "Read a host",
        description: "With its latest report and certificate. Any case; a viewer outside the host's group gets 404.",
      },
    })
    .delete(
      "/:hostname",
      async ({ params, set, actor }) => {
        await hosts.removeHost(actor, params.hostname);
        set.status = 204;
      },
      {
        params: hostParams,
        access: "admin",
        detail: {
          tags: ["hosts"],
          summary: "Remove a host",
          description: "Its certificates are revoked with it (reason cessationOfOperation); its connections are closed.",
        },
      },
    )
    .post(
      "/:hostname/bundle",
      async ({ params, set, actor }) => {
        const bundle = await hosts.hostBundle(actor, params.hostname);
        const name = params.hostname.toLowerCase();
        set.status = 201;
        // The reply holds a private key: no cache may keep it.
        set.headers["cache-control"] = "no-store";
        return { hostname: name, ...bundle, files: woodstockFiles(name, bundle) };
      },
      {
        params: hostParams,
        response: { 201: bundleReply },
        access: "admin",
        detail: {
          tags: ["hosts"],
          summary: "Issue a certificate bundle for a host",
          description:
            "A new clientAuth certificate (CN and SAN = the hostname) with a freshly generated key, and the root: `key`, " +
            "`certificate` and `ca` as PEM, and the same under the woodstock seed's file names in `files` " +
            "(`<hostname>_https.key`, `<hostname>_https.pem`, `rootCA.pem`) for the client's configuration directory; " +
            "write the key with mode 0600. The key is in this reply only (`Cache-Control: no-store`); latchkey keeps no copy. " +
            "Earlier bundles stay valid until revoked or the host is removed.",
        },
      },
    );
}
