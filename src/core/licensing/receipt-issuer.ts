/**
 * Signed license receipts for activate and check: their claims, and the reuse of a machine's
 * nonce-less receipt for a while, so that a check costs no signature.
 */
import type { LicenseRow } from "../../db/licenses.ts";
import { signReceipt, type SigningKey } from "../receipts.ts";
import type { MachineEntry } from "./check-cache.ts";
import type { CheckPassed } from "./wire.ts";

export interface ReceiptOptions {
  /** How long a receipt is valid, in seconds. */
  receiptTtlSeconds: number;
  /** How long past its expiry an application may keep running offline, in seconds. */
  receiptGraceSeconds: number;
}

type SignedKey = Pick<LicenseRow, "id" | "app_id" | "expires_at">;

export class ReceiptIssuer {
  constructor(
    private readonly signingKey: SigningKey,
    private readonly options: ReceiptOptions,
  ) {}

  publicKey(): { algorithm: "EdDSA"; key_id: string; public_key: string } {
    return { algorithm: "EdDSA", key_id: this.signingKey.keyId, public_key: this.signingKey.publicKeyPem };
  }

  /** A fresh receipt: valid for the configured time, never past the key's own expiry. */
  sign(license: SignedKey, hwid: string, nonce: string | undefined, now: number): string {
    const iat = Math.floor(now / 1000);
    let exp = iat + this.options.receiptTtlSeconds;
    if (license.expires_at !== null) exp = Math.min(exp, Math.floor(license.expires_at / 1000));
    return signReceipt(this.signingKey, {
      iss: "latchkey",
      app: license.app_id,
      key: license.id,
      hwid,
      iat,
      exp,
      grace: this.options.receiptGraceSeconds,
      ...(nonce === undefined ? {} : { nonce }),
    });
  }

  /** The machine's nonce-less receipt as a passed check: the cached one, signed again once its reuse time is over. */
  forMachine(entry: MachineEntry, license: SignedKey, hwid: string, now: number): CheckPassed {
    if (entry.passed === null || now >= entry.until) {
      entry.passed = { kind: "ok", receipt: this.sign(license, hwid, undefined, now) };
      // Reused for a minute at most, and never for more than a tenth of its lifetime, so that
      // every receipt handed out still has nearly all of it left (a short --receipt-ttl included).
      entry.until = now + Math.min(60_000, this.options.receiptTtlSeconds * 100);
    }
    return entry.passed;
  }
}
