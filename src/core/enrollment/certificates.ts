/**
 * Enrollment ends with a certificate (SPEC §4): a registered client sends a PKCS#10 request for
 * the key it generated and keeps (`client/csr`), and gets a clientAuth certificate for its
 * hostname, from then on its identity on the mTLS listener. Its host is registered with it. The
 * certificate is revoked with the client's identity: its key revoked or reset, the client deleted,
 * its host removed (`revokeOnKick`, wired in services.ts).
 */
import type { EnrollmentStore } from "../../db/enrollment.ts";
import type { Actor } from "../accounts.ts";
import type { CertificateAuthority } from "../ca/authority.ts";
import type { CertificateRequestInfo } from "../ca/x509.ts";
import { AppError, badRequest, unauthorized } from "../errors.ts";
import type { Hosts } from "../hosts.ts";
import { normalizeHostname } from "../hosts.ts";

export interface ClientCertificateOptions {
  /** Validity of a client's certificate (30 unless given); the agent renews at two thirds of it. */
  days?: number;
}

/** What `client/csr` answers: the certificate, and the root to verify the mTLS listener with. */
export interface ClientCertificateReply {
  certificate: string;
  ca: string;
  ca_fingerprint: string;
  serial: string;
  not_before: string;
  not_after: string;
}

export class ClientCertificates {
  readonly days: number;
  /** Revocations begun by `revokeOnKick` and not yet ended. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly store: EnrollmentStore,
    private readonly hosts: Hosts,
    private readonly ca: CertificateAuthority,
    options: ClientCertificateOptions = {},
  ) {
    this.days = options.days ?? 30;
  }

  /**
   * Signs a registered client's request, read (its signature verified with the key it carries) by
   * `readCertificateRequest`: its CN must be the hostname the client registered with (in any case). CN and SAN of the
   * certificate are that hostname in lower case; anything else the request asks for is ignored.
   */
  async issue(uuid: string, request: CertificateRequestInfo, address: string | null): Promise<ClientCertificateReply> {
    const client = await this.store.client(uuid);
    if (!client) throw unauthorized("register first (client/register)");
    let hostname: string;
    try {
      hostname = normalizeHostname(client.hostname);
    } catch {
      throw badRequest(
        `this client registered with hostname "${client.hostname}", which is not a DNS name; a certificate needs one`,
        "hostname",
      );
    }
    if (request.commonName === null || request.commonName.toLowerCase() !== hostname) {
      throw new AppError(
        "forbidden",
        `the request's subject must be CN=${hostname}, the hostname this client registered with` +
          (request.commonName === null ? " (it names no CN)" : ` (it is CN=${request.commonName})`),
        { field: "csr" },
      );
    }
    const actor: Actor = { name: `client:${uuid}`, address };
    await this.hosts.enrollHost(actor, hostname, client.client_group);
    const issued = await this.ca.issue(actor, {
      kind: "client",
      commonName: hostname,
      sans: [hostname],
      usages: ["clientAuth"],
      days: this.days,
      key: { spki: request.spki },
      hostname,
      clientUuid: uuid,
    });
    return {
      certificate: issued.pem,
      ca: await this.ca.caPem(),
      ca_fingerprint: await this.ca.caFingerprint(),
      serial: issued.certificate.serial,
      not_before: issued.certificate.not_before,
      not_after: issued.certificate.not_after,
    };
  }

  /**
   * The client whose valid certificate this is (by its SHA-256 fingerprint), if latchkey issued it
   * to an enrolled client; null for any other certificate (a host bundle, a user's).
   */
  async clientOf(fingerprint: string): Promise<string | null> {
    const certificate = await this.ca.byFingerprint(fingerprint);
    return certificate?.status === "valid" && certificate.kind === "client" ? certificate.client_uuid : null;
  }

  /**
   * Clients that lost the right to be connected lose their certificates (`clients.kick`): with a
   * key id, only a client still admitted by that key (one that since enrolled with another keeps its own).
   */
  async revokeOnKick(actor: Actor, uuids: readonly string[], keyId: number | undefined): Promise<void> {
    const work = Promise.all(
      uuids.map(async (uuid) => {
        if (keyId !== undefined && ((await this.store.client(uuid))?.key_id ?? keyId) !== keyId) return;
        await this.ca.revokeClientCertificates(actor, uuid, "privilegeWithdrawn");
      }),
    ).then(() => undefined);
    // Counted at once: a change that kicked clients has begun their revocation by the time it returns.
    this.inFlight.add(work);
    try {
      await work;
    } finally {
      this.inFlight.delete(work);
    }
  }

  /**
   * Resolves once every revocation begun so far has ended, however it ended (a failure is for the
   * caller of `revokeOnKick` to report): the CLI waits for it before it closes the database, as the
   * revocations that a key change sets off are written after the change itself.
   */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
