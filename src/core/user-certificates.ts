/**
 * Certificates registered for users' certificate login (sysadm `rpc/auth_ssl` and its `rpc/settings`
 * calls, SPEC §3): issued by latchkey's CA and registered in one step, registered, listed (in the
 * sysadm shape and in latchkey's richer one), revoked, and tried by a login whose proof carries no
 * username. A certificate issued by latchkey's CA is verified by the verifier (clientAuth, validity,
 * not revoked in the CA), at registration and at every login, and must be of kind `user`: a
 * machine's certificate (an enrolled client's, a host bundle's, the listener's) never becomes a
 * person's login. A self-signed one is registered only by an admin and holds until it expires.
 * Everyone manages their own; admins manage everyone's.
 */
import { X509Certificate } from "node:crypto";
import type { UserRow } from "../db/users.ts";
import type { UserCertificateStore, UserCertificateWithOwner } from "../db/user-certificates.ts";
import type { Accounts, Actor } from "./accounts.ts";
import type { Audit } from "./audit.ts";
import type { CertificateMatch, CertificateKeys } from "./auth.ts";
import type { CertificateAuthority, CertificateView } from "./ca/authority.ts";
import { identifyCertificate } from "./ca/identity.ts";
import type { CertificateVerifier } from "./ca/verify.ts";
import {
  certificateDer,
  certificatePem,
  normalizeFingerprint,
  readCertificate,
  readCertificateRequest,
  type CertificateInfo,
} from "./ca/x509.ts";
import type { Clock } from "./clock.ts";
import { AppError, badRequest, conflict, forbidden, notFound } from "./errors.ts";
import { isoTime } from "./fields.ts";
import {
  canonicalKey,
  checkProof,
  parsePubKey,
  proofKey,
  pubKeyChecksum,
  sysadmPubKey,
  type CanonicalKey,
  type ProofKey,
} from "./key-proofs.ts";
import type { Principal } from "./sessions.ts";

/** What the REST API, the CLI and the panel show of a registration. */
export interface UserCertificateView {
  id: number;
  username: string;
  /** The key as the client gave it (base64), as sysadm's `list_ssl_certs` keys it. */
  pub_key: string;
  /** SHA-256 of the canonical SubjectPublicKeyInfo, hex: the same for every spelling of the key. */
  key_id: string;
  /** `rsa-2048`, `ec-P-256`, `ec-P-384` or `ed25519`. */
  key_type: string;
  /** What `list_ssl_checksums` lists for it. */
  key_md5: string;
  nickname: string;
  email: string;
  /** SHA-256 of the certificate's DER, hex. */
  fingerprint: string | null;
  /** The subject's and the issuer's CN. */
  subject: string | null;
  issuer: string | null;
  not_before: string | null;
  not_after: string | null;
  expired: boolean;
  self_signed: boolean;
  /** Issued by latchkey's CA: its serial (the CA's revocation applies to it). */
  ca_serial: string | null;
  status: "active" | "revoked";
  registered_at: string;
  registered_by: string;
  revoked_at: string | null;
  revoked_by: string | null;
  /** The certificate, PEM. */
  certificate: string | null;
}

export interface RegistrationInput {
  /** Whose certificate it is; the caller's own unless given (others' need an admin). */
  username?: string | undefined;
  /** The key as a sysadm client gives it (base64 of its PEM or DER). */
  pubKey?: string | undefined;
  /** The certificate, PEM. Without it, `pubKey` must name the certificate presented on the connection. */
  certificate?: string | undefined;
  /** The DER of the valid client certificate the caller's TLS connection presented, if any. */
  presented?: Uint8Array | null | undefined;
  nickname?: string | undefined;
  email?: string | undefined;
}

export interface IssueInput {
  /** Whose certificate it is; the caller's own unless given (others' need an admin). */
  username?: string | undefined;
  /**
   * A PKCS#10 request (PEM) for a key the user keeps: it gives the key only (its subject is
   * ignored; the certificate's CN is the username). Without it a key is generated, for admins only.
   */
  csr?: string | undefined;
  /** Validity in days, 1 to 3650; 365 unless given. */
  days?: number | undefined;
  nickname?: string | undefined;
  email?: string | undefined;
}

/** An issued and registered certificate: the registration, with its PEM, the root and, when generated, the key. */
export interface IssuedUserCertificate extends UserCertificateView {
  /** The certificate, PEM. */
  certificate: string;
  /** The root CA that issued it, PEM (the `rootCA.pem` a client verifies the mutual-TLS listener with). */
  ca: string;
  /** The generated private key (PKCS#8 PEM) when no request was given: in this reply only, stored nowhere. */
  key?: string;
}

export const DEFAULT_ISSUE_DAYS = 365;

/** What latchkey's CA issues certificates of other kinds for, as a refusal names it. */
const NOT_A_USER: Record<Exclude<CertificateView["kind"], "user">, string> = {
  client: "an enrolled client machine (kind client)",
  host: "a host's bundle (kind host)",
  server: "the mutual-TLS listener (kind server)",
};

/** Who may do what: null is the local CLI, which works with the data directory and may do everything. */
type Caller = Principal | null;

const MAX_CACHED_KEYS = 10_000;

/** sysadm writes dates as Qt's ISODate: seconds, no fraction. */
function sysadmTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export class UserCertificates implements CertificateKeys {
  /** Parsed keys by key id, so that a login does not parse every key again. */
  private readonly keys = new Map<string, ProofKey>();

  constructor(
    private readonly store: UserCertificateStore,
    private readonly accounts: Accounts,
    private readonly ca: CertificateAuthority,
    private readonly verifier: () => Promise<CertificateVerifier>,
    private readonly audit: Audit,
    private readonly clock: Clock,
  ) {}

  /**
   * Registers a certificate for a user: the one given as PEM, or the one presented on the caller's
   * TLS connection whose key `pubKey` names. Issued by latchkey's CA: it must verify (clientAuth,
   * valid, not revoked) and be a `user` certificate. Self-signed: only an admin registers it.
   * Anything else is refused.
   */
  async register(actor: Actor, caller: Caller, input: RegistrationInput): Promise<UserCertificateView> {
    let owner: string | null = input.username ?? caller?.username ?? null;
    try {
      const user = await this.owner(caller, input.username, "register");
      owner = user.username;
      const { der, source } = this.certificateOf(input);
      const info = readCertificate(der);
      const key = canonicalKey(info.publicKey, "certificate");
      if (input.pubKey !== undefined && parsePubKey(input.pubKey).keyId !== key.keyId) {
        throw badRequest("is not the key of this certificate", "pub_key");
      }
      const trust = await this.trust(caller, der, info);
      const id = await this.insert(actor, user, {
        der,
        info,
        key,
        trust,
        source,
        pubKey: input.pubKey,
        nickname: input.nickname,
        email: input.email,
      });
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user_cert.register",
        target: user.username,
        outcome: "success",
        reason:
          `${key.type} ${trust.selfSigned ? "self-signed" : `issued by this CA, serial ${trust.caSerial}`}, ` +
          `fingerprint ${info.fingerprint}`,
      });
      return this.view((await this.store.byId(id))!);
    } catch (error) {
      await this.auditFailure(actor, "user_cert.register", owner, error);
      throw error;
    }
  }

  /**
   * Issues a `user` certificate from latchkey's CA (CN = the username, clientAuth only, `days`
   * 1 to 3650, 365 unless given) and registers it for the user as `register` does, so that it
   * signs in with `rpc/auth_ssl` at once. The key is the one in `csr` (a PKCS#10 request, its
   * signature checked; its subject is ignored), or one generated here, returned in this reply
   * only and stored nowhere.
   *
   * Who: one's own, or anyone's for an admin (and the CLI). Non-admins may issue for themselves,
   * but only for a request: the server generates no private key for them, so a user's login key
   * is made and kept on their own machine and never crosses the network (the main listener may be
   * plain HTTP). Admins may have one generated, to hand over, as they do host bundles. A user thus
   * adds a login key without an admin, which a self-signed certificate still needs; unlike that
   * one, this key is the CA's to govern: at most 3650 days, listed among the CA's certificates,
   * revocable there and on the CRL, and audited (`cert.issue`, `user_cert.issue`).
   *
   * Everything that can be refused is checked before the CA signs (the owner, the days, the
   * request, a key registered already); should the registration still fail (a race on the key),
   * the certificate just issued is revoked.
   */
  async issue(actor: Actor, caller: Caller, input: IssueInput): Promise<IssuedUserCertificate> {
    let owner: string | null = input.username ?? caller?.username ?? null;
    try {
      const user = await this.owner(caller, input.username, "issue");
      owner = user.username;
      const days = input.days ?? DEFAULT_ISSUE_DAYS;
      if (!Number.isInteger(days) || days < 1 || days > 3650) throw badRequest("must be a whole number from 1 to 3650", "days");
      let requested: Uint8Array | null = null;
      if (input.csr === undefined) {
        if (caller !== null && caller.role !== "admin") {
          throw new AppError(
            "forbidden",
            "only an admin may have the server generate a private key; send a certificate request (csr) for a key of your own, " +
              "e.g. openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout me.key -subj /CN=me -out me.csr",
            { field: "csr" },
          );
        }
      } else {
        const key = canonicalKey(readCertificateRequest(input.csr, "csr").spki, "csr");
        if (await this.store.liveByKey(key.keyId)) throw await this.keyTaken(user, key.keyId, "csr");
        requested = key.spki;
      }
      const issued = await this.ca.issue(actor, {
        kind: "user",
        commonName: user.username,
        usages: ["clientAuth"],
        days,
        key: requested === null ? "generate" : { spki: requested },
      });
      let id: number;
      let key: CanonicalKey;
      let info: CertificateInfo;
      try {
        const der = certificateDer(issued.pem);
        info = readCertificate(der);
        key = canonicalKey(info.publicKey, "certificate");
        const trust = await this.trust(caller, der, info);
        id = await this.insert(actor, user, { der, info, key, trust, source: "csr", nickname: input.nickname, email: input.email });
      } catch (error) {
        // Issued but not registered: revoked, so that no user certificate of this CA lives outside the registry.
        await this.ca.revoke(actor, issued.certificate.serial, "cessationOfOperation").catch(() => undefined);
        throw error;
      }
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user_cert.issue",
        target: user.username,
        outcome: "success",
        reason:
          `${key.type} ${issued.key ? "key generated here" : "key from a certificate request"}, serial ${issued.certificate.serial}, ` +
          `${days} days, fingerprint ${info.fingerprint}`,
      });
      return {
        ...this.view((await this.store.byId(id))!),
        certificate: issued.pem,
        ca: await this.ca.caPem(),
        ...(issued.key ? { key: issued.key } : {}),
      };
    } catch (error) {
      await this.auditFailure(actor, "user_cert.issue", owner, error);
      throw error;
    }
  }

  /**
   * Revokes a user's live registration, named by its certificate's fingerprint, its `pub_key` as
   * registered, or any spelling of its key. It no longer signs in; the record stays.
   */
  async revoke(actor: Actor, caller: Caller, username: string | undefined, ref: string): Promise<UserCertificateView> {
    const user = await this.owner(caller, username, "revoke");
    const row = await this.find(user, ref);
    if (!row) {
      await this.audit.record({
        actor: actor.name,
        address: actor.address,
        action: "user_cert.revoke",
        target: user.username,
        outcome: "failure",
        reason: "no such registration",
      });
      throw notFound(`${user.username} has no registered certificate with this key or fingerprint`);
    }
    if (!(await this.store.revoke(row.id, actor.name, this.clock()))) throw conflict("this certificate was revoked meanwhile");
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action: "user_cert.revoke",
      target: user.username,
      outcome: "success",
      reason: `${row.key_type}${row.fingerprint ? `, fingerprint ${row.fingerprint}` : ""}`,
    });
    return this.view((await this.store.byId(row.id))!);
  }

  /** A page of registrations: one user's (`username`), or everyone's for an admin (or the CLI). */
  async list(
    caller: Caller,
    filter: { username?: string | undefined; status?: "active" | "revoked" | undefined },
    limit: number,
    offset: number,
  ): Promise<{ items: UserCertificateView[]; total: number }> {
    let userId: number | undefined;
    if (filter.username !== undefined || (caller !== null && caller.role !== "admin"))
      userId = (await this.owner(caller, filter.username, "list")).id;
    const where = { userId, status: filter.status };
    const rows = await this.store.list(where, limit, offset);
    return { items: rows.map((row) => this.view(row)), total: await this.store.count(where) };
  }

  /**
   * `list_ssl_certs`: live registrations by username, then by `pub_key`, each as sysadm words it
   * ("Nickname: …\nEmail: …\nDate Registered: …"). Everyone's for an admin, one's own otherwise.
   */
  async sysadmList(caller: Principal): Promise<Record<string, Record<string, string>>> {
    const out: Record<string, Record<string, string>> = {};
    for (const row of await this.store.live(caller.role === "admin" ? undefined : caller.userId)) {
      (out[row.username] ??= {})[row.pub_key] =
        `Nickname: ${row.nickname}\nEmail: ${row.email}\nDate Registered: ${sysadmTime(row.registered_at)}`;
    }
    return out;
  }

  /** `list_ssl_checksums`: base64 MD5 of each live key as its client sent it. Everyone's for an admin, one's own otherwise. */
  async checksums(caller: Principal): Promise<{ md5_keys: string[] }> {
    return { md5_keys: (await this.store.live(caller.role === "admin" ? undefined : caller.userId)).map((row) => row.key_md5) };
  }

  /**
   * The live registration whose key made `proof` over `message`, and the account it names; null
   * when no key did. Every live key whose kind could have made a proof of that length is tried.
   * A certificate that expired, or that latchkey's CA no longer vouches for, matches with a refusal.
   */
  async match(message: Uint8Array, proof: Uint8Array): Promise<CertificateMatch | null> {
    for (const candidate of await this.store.liveKeys()) {
      const kind = checkProof(this.proofKeyOf(candidate.key_id, candidate.key_spki), message, proof);
      if (kind === null) continue;
      const row = await this.store.byId(candidate.id);
      const user = row ? await this.accounts.get(row.username) : null;
      if (!row || !user) continue;
      return {
        user,
        kind,
        refusal: await this.refusal(row),
        stillRegistered: () => this.store.isLive(row.id),
      };
    }
    return null;
  }

  /** Why a matched certificate may not sign in now, or null. */
  private async refusal(row: UserCertificateWithOwner): Promise<string | null> {
    const now = this.clock();
    if (row.not_after !== null && row.not_after <= now) return "certificate expired";
    if (row.not_before !== null && row.not_before > now) return "certificate not yet valid";
    if (row.ca_serial !== null && row.certificate !== null) {
      const identity = await identifyCertificate({ verifier: this.verifier, ca: this.ca, clock: this.clock }, row.certificate);
      if (identity.kind !== "valid") return `certificate refused (${identity.kind === "invalid" ? identity.reason : "none"})`;
    }
    return null;
  }

  private proofKeyOf(keyId: string, spki: Uint8Array): ProofKey {
    let key = this.keys.get(keyId);
    if (!key) {
      if (this.keys.size >= MAX_CACHED_KEYS) this.keys.delete(this.keys.keys().next().value!);
      this.keys.set(keyId, (key = proofKey(spki)));
    }
    return key;
  }

  /** Stores a registration whose certificate passed `trust`; conflict when its key is registered already. */
  private async insert(
    actor: Actor,
    user: UserRow,
    entry: {
      der: Uint8Array;
      info: CertificateInfo;
      key: CanonicalKey;
      trust: { selfSigned: boolean; caSerial: string | null };
      source: string;
      pubKey?: string | undefined;
      nickname?: string | undefined;
      email?: string | undefined;
    },
  ): Promise<number> {
    const { der, info, key, trust } = entry;
    const pubKey = entry.pubKey ?? sysadmPubKey(key.spki);
    const id = await this.store.insert({
      user_id: user.id,
      pub_key: pubKey,
      key_spki: key.spki,
      key_id: key.keyId,
      key_md5: pubKeyChecksum(pubKey),
      key_type: key.type,
      nickname: entry.nickname ?? "",
      email: entry.email ?? "",
      certificate: der,
      fingerprint: info.fingerprint,
      subject: info.commonName,
      issuer: info.issuerCommonName,
      not_before: info.notBefore.getTime(),
      not_after: info.notAfter.getTime(),
      self_signed: trust.selfSigned ? 1 : 0,
      ca_serial: trust.caSerial,
      registered_at: this.clock(),
      registered_by: actor.name,
    });
    if (id === null) throw await this.keyTaken(user, key.keyId, entry.source);
    return id;
  }

  /** The conflict of a key that a live registration (the user's own, or anyone's) holds already. */
  private async keyTaken(user: UserRow, keyId: string, field: string): Promise<AppError> {
    const holder = await this.store.liveByKey(keyId);
    return conflict(
      holder?.user_id === user.id ? `this key is already registered for ${user.username}` : "this key is already registered",
      field,
    );
  }

  private async auditFailure(actor: Actor, action: string, owner: string | null, error: unknown): Promise<void> {
    if (!(error instanceof AppError)) return;
    await this.audit.record({
      actor: actor.name,
      address: actor.address,
      action,
      target: owner,
      outcome: error.code === "forbidden" ? "denied" : "failure",
      reason: `${error.field ? `${error.field}: ` : ""}${error.message}`,
    });
  }

  /** The account a call acts on: the caller's own unless named; another's needs an admin (checked before it is looked up). */
  private async owner(caller: Caller, username: string | undefined, action: string): Promise<UserRow> {
    const name = username ?? caller?.username;
    if (name === undefined) throw badRequest("name the user whose certificates these are", "user");
    if (caller !== null && caller.role !== "admin" && name !== caller.username) {
      throw forbidden(`only admins may ${action} the certificates of other users`);
    }
    const user = await this.accounts.get(name);
    if (!user) throw notFound(`no user ${name}`);
    return user;
  }

  /** The certificate to register: the given PEM, or the one presented on the connection whose key `pubKey` names. */
  private certificateOf(input: RegistrationInput): { der: Uint8Array; source: "certificate" | "pub_key" } {
    if (input.certificate !== undefined) return { der: certificateDer(input.certificate, "certificate"), source: "certificate" };
    if (input.pubKey === undefined) throw badRequest("is required: the key of a certificate presented on this connection", "pub_key");
    const wanted = parsePubKey(input.pubKey);
    if (!input.presented) {
      throw badRequest(
        "must be the key of a certificate presented on this connection: connect to the mutual-TLS listener with that certificate, " +
          "or send the certificate itself as {certificate}",
        "pub_key",
      );
    }
    if (canonicalKey(readCertificate(input.presented).publicKey, "pub_key").keyId !== wanted.keyId) {
      throw badRequest("does not match the certificate presented on this connection", "pub_key");
    }
    return { der: input.presented, source: "pub_key" };
  }

  /**
   * Whether latchkey's CA vouches for the certificate as a user's, or it is self-signed and an
   * admin registers it. A certificate of the CA of another kind is refused.
   */
  private async trust(caller: Caller, der: Uint8Array, info: CertificateInfo): Promise<{ selfSigned: boolean; caSerial: string | null }> {
    const identity = await identifyCertificate({ verifier: this.verifier, ca: this.ca, clock: this.clock }, der);
    if (identity.kind === "valid") {
      const kind = (await this.ca.byFingerprint(info.fingerprint))?.kind;
      if (kind !== undefined && kind !== "user") {
        throw badRequest(
          `was issued by this server's CA to ${NOT_A_USER[kind]}, not to a user, and does not sign a person in: issue a user ` +
            "certificate instead (latchkey user cert issue, POST /api/users/{username}/certificates/issue, or the panel's My certificates)",
          "certificate",
        );
      }
      return { selfSigned: false, caSerial: identity.serial };
    }
    if (await this.ca.byFingerprint(info.fingerprint)) {
      throw badRequest(`was issued by this server's CA but is refused (${reasonText(identity)})`, "certificate");
    }
    if (!selfSigned(der, info)) {
      throw badRequest("is neither issued by this server's CA nor self-signed: use a certificate from this server's CA", "certificate");
    }
    if (caller !== null && caller.role !== "admin") {
      throw forbidden("only an admin may register a self-signed certificate; use a certificate issued by this server's CA");
    }
    const now = this.clock();
    if (info.notAfter.getTime() <= now) throw badRequest("has expired", "certificate");
    if (info.notBefore.getTime() > now) throw badRequest("is not valid yet", "certificate");
    return { selfSigned: true, caSerial: null };
  }

  private async find(user: UserRow, ref: string): Promise<UserCertificateWithOwner | null> {
    const fingerprint = normalizeFingerprint(ref);
    if (fingerprint !== null) {
      const byFingerprint = await this.store.liveOfUser(user.id, { fingerprint });
      if (byFingerprint) return byFingerprint;
    }
    const exact = await this.store.liveOfUser(user.id, { pubKey: ref });
    if (exact) return exact;
    let key: CanonicalKey;
    try {
      key = parsePubKey(ref);
    } catch {
      return null;
    }
    return this.store.liveOfUser(user.id, { keyId: key.keyId });
  }

  private view(row: UserCertificateWithOwner): UserCertificateView {
    return {
      id: row.id,
      username: row.username,
      pub_key: row.pub_key,
      key_id: row.key_id,
      key_type: row.key_type,
      key_md5: row.key_md5,
      nickname: row.nickname,
      email: row.email,
      fingerprint: row.fingerprint,
      subject: row.subject,
      issuer: row.issuer,
      not_before: isoTime(row.not_before),
      not_after: isoTime(row.not_after),
      expired: row.not_after !== null && row.not_after <= this.clock(),
      self_signed: row.self_signed === 1,
      ca_serial: row.ca_serial,
      status: row.revoked_at === null ? "active" : "revoked",
      registered_at: isoTime(row.registered_at),
      registered_by: row.registered_by,
      revoked_at: isoTime(row.revoked_at),
      revoked_by: row.revoked_by,
      certificate: row.certificate ? certificatePem(row.certificate) : null,
    };
  }
}

function reasonText(identity: Awaited<ReturnType<typeof identifyCertificate>>): string {
  return identity.kind === "invalid" ? identity.reason.replaceAll("_", " ") : "not verified";
}

/** Subject and issuer are the same name, and the certificate's own key verifies its signature. */
function selfSigned(der: Uint8Array, info: CertificateInfo): boolean {
  if (!info.selfIssued) return false;
  try {
    const certificate = new X509Certificate(der);
    return certificate.verify(certificate.publicKey);
  } catch {
    return false;
  }
}
