"""Verifies a latchkey license receipt offline, with the `cryptography` package (pip install cryptography).

    python3 verify_receipt.py PUBLIC_KEY.pem RECEIPT HWID [NONCE]

Exit status: 0 valid, 2 expired but inside its offline grace period, 1 invalid.
VERIFY_NOW=<unix seconds> pretends the clock says that (for tests only).
Copy verify_receipt() into your application; main() below only shows how to call it.
"""
import base64
import binascii
import json
import os
import re
import sys
import time
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

# How far this machine's clock may lag the server's before a receipt counts as "from the future".
CLOCK_SKEW_SECONDS = 300
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class ReceiptError(Exception):
    pass


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def verify_receipt(receipt: str, public_key_pem: bytes, *, hwid=None, nonce=None, app_id=None, now=None):
    """Returns ("valid" | "grace", claims) or raises ReceiptError.

    public_key_pem: the server's key (GET /api/license/public-key?format=pem), shipped inside the app.
    hwid: this machine's id, as sent to /api/activate and /api/check.
    nonce: the nonce sent with the request that returned this receipt, if one was sent.
    app_id: your application's id on the server, if you want it checked.
    """
    parts = receipt.strip().split(".")
    if len(parts) != 3 or not all(_BASE64URL.match(p) for p in parts):
        raise ReceiptError("not a compact JWS (three base64url parts)")
    encoded_header, encoded_claims, encoded_signature = parts
    try:
        header = json.loads(_b64url(encoded_header))
        claims = json.loads(_b64url(encoded_claims))
        signature = _b64url(encoded_signature)
    except (ValueError, binascii.Error):
        raise ReceiptError("the header or the claims are not JSON") from None
    # Decide the algorithm yourself: never let the receipt choose it (no "none", no HMAC).
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise ReceiptError(f"unexpected algorithm {header.get('alg') if isinstance(header, dict) else None!r}")
    key = load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ReceiptError("the pinned public key is not an Ed25519 key")
    try:
        key.verify(signature, f"{encoded_header}.{encoded_claims}".encode("ascii"))
    except InvalidSignature:
        raise ReceiptError("bad signature: altered, or signed by another server") from None

    if not isinstance(claims, dict):
        raise ReceiptError("the claims are incomplete")
    grace = claims.get("grace", 0)
    if claims.get("iss") != "latchkey" or not isinstance(claims.get("hwid"), str) or not all(
        _is_int(v) for v in (claims.get("app"), claims.get("iat"), claims.get("exp"), grace)
    ):
        raise ReceiptError("the claims are incomplete")
    if app_id is not None and claims["app"] != app_id:
        raise ReceiptError(f"issued for application {claims['app']}, not {app_id}")
    if hwid is not None and claims["hwid"] != hwid:
        raise ReceiptError("issued for another machine")
    if nonce is not None and claims.get("nonce") != nonce:
        raise ReceiptError("the nonce does not match: a replayed receipt")
    now = time.time() if now is None else now
    if now < claims["iat"] - CLOCK_SKEW_SECONDS:
        raise ReceiptError("issued in the future: this machine's clock was set back")
    if now <= claims["exp"]:
        return "valid", claims
    if now <= claims["exp"] + grace:
        return "grace", claims
    expired = datetime.fromtimestamp(claims["exp"], timezone.utc).isoformat()
    raise ReceiptError(f"expired at {expired}")


def main(argv) -> int:
    if len(argv) not in (3, 4):
        print("usage: verify_receipt.py PUBLIC_KEY.pem RECEIPT HWID [NONCE]", file=sys.stderr)
        return 1
    key_file, receipt, hwid = argv[:3]
    nonce = argv[3] if len(argv) == 4 else None
    now = float(os.environ["VERIFY_NOW"]) if "VERIFY_NOW" in os.environ else None
    with open(key_file, "rb") as f:
        public_key_pem = f.read()
    try:
        status, claims = verify_receipt(receipt, public_key_pem, hwid=hwid, nonce=nonce, now=now)
    except ReceiptError as error:
        print(f"invalid: {error}")
        return 1
    expires = datetime.fromtimestamp(claims["exp"], timezone.utc).isoformat()
    print(f"{status}: license {claims['key']} of application {claims['app']} on {claims['hwid']}, expires {expires}")
    return 0 if status == "valid" else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
