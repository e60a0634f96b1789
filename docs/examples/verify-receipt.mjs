// Verifies a latchkey license receipt offline, with node:crypto only (Node.js ≥ 16, Bun).
//
//   node verify-receipt.mjs PUBLIC_KEY.pem RECEIPT HWID [NONCE]
//   bun  verify-receipt.mjs PUBLIC_KEY.pem RECEIPT HWID [NONCE]
//
// Exit status: 0 valid, 2 expired but inside its offline grace period, 1 invalid.
// VERIFY_NOW=<unix seconds> pretends the clock says that (for tests only).
// Copy verifyReceipt() into your application; main() below only shows how to call it.
import { createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

/** How far this machine's clock may lag the server's before a receipt counts as "from the future". */
const CLOCK_SKEW_SECONDS = 300;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

export class ReceiptError extends Error {}

/**
 * Checks a receipt and returns its claims with status "valid" or "grace", or throws ReceiptError.
 * publicKeyPem: the server's key (GET /api/license/public-key?format=pem), shipped inside the app.
 * hwid: this machine's id, as sent to /api/activate and /api/check.
 * nonce: the nonce sent with the request that returned this receipt, if one was sent.
 * appId: your application's id on the server, if you want it checked.
 */
export function verifyReceipt(receipt, publicKeyPem, { hwid, nonce, appId, now = Date.now() / 1000 } = {}) {
  const parts = receipt.trim().split(".");
  if (parts.length !== 3 || !parts.every((part) => BASE64URL.test(part))) {
    throw new ReceiptError("not a compact JWS (three base64url parts)");
  }
  const [encodedHeader, encodedClaims, encodedSignature] = parts;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(encodedHeader, "base64url").toString("utf8"));
    claims = JSON.parse(Buffer.from(encodedClaims, "base64url").toString("utf8"));
  } catch {
    throw new ReceiptError("the header or the claims are not JSON");
  }
  // Decide the algorithm yourself: never let the receipt choose it (no "none", no HMAC).
  if (header?.alg !== "EdDSA") throw new ReceiptError(`unexpected algorithm ${JSON.stringify(header?.alg)}`);
  const signature = Buffer.from(encodedSignature, "base64url");
  const signedPart = Buffer.from(`${encodedHeader}.${encodedClaims}`, "ascii");
  const key = createPublicKey(publicKeyPem);
  if (key.asymmetricKeyType !== "ed25519") throw new ReceiptError("the pinned public key is not an Ed25519 key");
  // Ed25519 takes no separate digest: the algorithm argument is null.
  if (signature.length !== 64 || !verify(null, signedPart, key, signature)) {
    throw new ReceiptError("bad signature: altered, or signed by another server");
  }

  const { iss, app, hwid: receiptHwid, iat, exp, grace = 0 } = claims ?? {};
  if (iss !== "latchkey" || typeof receiptHwid !== "string" || ![app, iat, exp, grace].every(Number.isInteger)) {
    throw new ReceiptError("the claims are incomplete");
  }
  if (appId !== undefined && app !== appId) throw new ReceiptError(`issued for application ${app}, not ${appId}`);
  if (hwid !== undefined && receiptHwid !== hwid) throw new ReceiptError("issued for another machine");
  if (nonce !== undefined && claims.nonce !== nonce) throw new ReceiptError("the nonce does not match: a replayed receipt");
  if (now < iat - CLOCK_SKEW_SECONDS) throw new ReceiptError("issued in the future: this machine's clock was set back");
  if (now <= exp) return { status: "valid", claims };
  if (now <= exp + grace) return { status: "grace", claims };
  throw new ReceiptError(`expired at ${new Date(exp * 1000).toISOString()}`);
}

function main(argv) {
  if (argv.length < 3 || argv.length > 4) {
    process.stderr.write("usage: verify-receipt.mjs PUBLIC_KEY.pem RECEIPT HWID [NONCE]\n");
    return 1;
  }
  const [keyFile, receipt, hwid, nonce] = argv;
  const now = process.env.VERIFY_NOW === undefined ? undefined : Number(process.env.VERIFY_NOW);
  try {
    const { status, claims } = verifyReceipt(receipt, readFileSync(keyFile, "utf8"), {
      hwid,
      nonce,
      ...(now === undefined ? {} : { now }),
    });
    process.stdout.write(
      `${status}: license ${claims.key} of application ${claims.app} on ${claims.hwid}, ` +
        `expires ${new Date(claims.exp * 1000).toISOString()}\n`,
    );
    return status === "valid" ? 0 : 2;
  } catch (error) {
    if (!(error instanceof ReceiptError)) throw error;
    process.stdout.write(`invalid: ${error.message}\n`);
    return 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href)
  process.exitCode = main(process.argv.slice(2));
