/** REST for the built-in CA (SPEC §5): the public root and its CRL, the root's details, and the certificates it issued. */
import { Elysia } from "elysia";
import * as v from "valibot";
import { CERTIFICATE_KINDS, REVOCATION_REASONS } from "../core/ca/authority.ts";
import { certificateSerial, hostname, limit, offset } from "../core/fields.ts";
import type { Services } from "../core/services.ts";
import type { SessionPlugin } from "./session.ts";

const serialParams = v.strictObject({ serial: certificateSerial });
const pemFile = { schema: { type: "string" as const } };

export function caRoutes(services: Services, session: SessionPlugin) {
  const ca = services.ca;
  return new Elysia({ name: "latchkey/http/ca", prefix: "/api" })
    .use(session)
    .get(
      "/ca.pem",
      async () =>
        new Response(await ca.caPem(), {
          headers: { "content-type": "application/x-pem-file", "content-disposition": 'attachment; filename="rootCA.pem"' },
        }),
      {
        public: true,
        detail: {
          tags: ["ca"],
          summary: "The root CA certificate (rootCA.pem)",
          description:
            "The public root, PEM: clients trust it to verify the mTLS listener, and it is the `rootCA.pem` of a woodstock client. " +
            "`latchkey client install -ca-fingerprint` pins its SHA-256 fingerprint (`GET /api/ca`).",
          responses: { 200: { description: "The root certificate", content: { "application/x-pem-file": pemFile } } },
        },
      },
    )
    .get(
      "/crl",
      async ({ query }) => {
        const crl = await ca.crl();
        if (query.format === "pem") return new Response(crl.pem, { headers: { "content-type": "application/x-pem-file" } });
        return new Response(new Uint8Array(crl.der), { headers: { "content-type": "application/pkix-crl" } });
      },
      {
        query: v.strictObject({ format: v.optional(v.picklist(["der", "pem"], "must be der or pem")) }),
        public: true,
        detail: {
          tags: ["ca"],
          summary: "The certificate revocation list",
          description:
            "The root's CRL, DER (`application/pkix-crl`), or PEM with `?format=pem`: every revoked certificate that has not expired. " +
            "Rebuilt at once after each revocation, and before its nextUpdate (7 days).",
          responses: {
            200: {
              description: "The CRL",
              content: { "application/pkix-crl": { schema: { type: "string", format: "binary" } }, "application/x-pem-file": pemFile },
            },
          },
        },
      },
    )
    .get("/ca", () => ca.root(), {
      access: "viewer",
      detail: {
        tags: ["ca"],
        summary: "The root CA",
        description:
          "Subject, serial, SHA-256 fingerprint (hex, and colon-separated as `openssl x509 -fingerprint -sha256` prints it), " +
          "validity, whether it was `generated` or `imported`, and the certificate (PEM). Never the key.",
      },
    })
    .get(
      "/certs",
      ({ query, principal }) =>
        ca.list(principal, { kind: query.kind, status: query.status, hostname: query.hostname }, query.limit ?? 100, query.offset ?? 0),
      {
        query: v.strictObject({
          kind: v.optional(v.picklist(CERTIFICATE_KINDS, `must be one of ${CERTIFICATE_KINDS.join(", ")}`)),
          status: v.optional(v.picklist(["valid", "revoked"], "must be valid or revoked")),
          hostname: v.optional(hostname),
          limit,
          offset,
        }),
        access: "viewer",
        detail: {
          tags: ["ca"],
          summary: "List issued certificates",
          description:
            "Newest first. `status` is `valid` or `revoked`; a valid certificate past its not_after says `expired: true`. " +
            "Viewers see only the certificates of hosts in their groups.",
        },
      },
    )
    .get("/certs/:serial", ({ params, principal }) => ca.get(principal, params.serial), {
      params: serialParams,
      access: "viewer",
      detail: {
        tags: ["ca"],
        summary: "Read a certificate, with its PEM",
        description: "The serial in hex, any case, with or without colons. Viewers see only the certificates of hosts in their groups.",
      },
    })
    .post("/certs/:serial/revoke", ({ params, body, actor }) => ca.revoke(actor, params.serial, body?.reason ?? "unspecified"), {
      params: serialParams,
      body: v.optional(
        v.strictObject({ reason: v.optional(v.picklist(REVOCATION_REASONS, `must be one of ${REVOCATION_REASONS.join(", ")}`)) }),
      ),
      access: "admin",
      detail: {
        tags: ["ca"],
        summary: "Revoke a certificate",
        description:
          "`{reason}`, an RFC 5280 name; the body may be left out (`unspecified`). The CRL is rebuilt at once and connections " +
          "made with the certificate are closed. A certificate already revoked: 409.",
      },
    });
}
