-- Certificates registered for users' certificate login (sysadm `rpc/auth_ssl`, SPEC §3): a user
-- proves the private key of one of them and is signed in. The original sysadm server keys its
-- registry by the base64 `pub_key` string a client sends; latchkey keeps that string as given and
-- a canonical SubjectPublicKeyInfo beside it, so that the PEM and DER spellings of one key meet.
-- A revoked registration stays on record (revoked_at) for the audit trail; deleting the user
-- deletes its registrations.

CREATE TABLE user_certificates (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  pub_key       TEXT    NOT NULL,                  -- base64, as the client gave it (or of the key's PEM, when it gave none)
  key_spki      BLOB    NOT NULL,                  -- the public key: canonical DER SubjectPublicKeyInfo
  key_id        TEXT    NOT NULL,                  -- SHA-256 of key_spki, lowercase hex
  key_md5       TEXT    NOT NULL,                  -- base64 MD5 of the base64-decoded pub_key (`list_ssl_checksums`)
  key_type      TEXT    NOT NULL,                  -- rsa-2048, ec-P-256, ed25519, ...
  nickname      TEXT    NOT NULL DEFAULT '',
  email         TEXT    NOT NULL DEFAULT '',
  certificate   BLOB,                              -- DER, when known
  fingerprint   TEXT,                              -- SHA-256 of the certificate's DER, lowercase hex
  subject       TEXT,                              -- the certificate's subject CN
  issuer        TEXT,                              -- its issuer's CN
  not_before    INTEGER,
  not_after     INTEGER,
  self_signed   INTEGER NOT NULL DEFAULT 0 CHECK (self_signed IN (0, 1)),
  ca_serial     TEXT,                              -- set when latchkey's CA issued it: checked against the CA at every login
  registered_at INTEGER NOT NULL,
  registered_by TEXT    NOT NULL,
  revoked_at    INTEGER,
  revoked_by    TEXT
);
-- A key names one account: at most one live registration per key, whoever holds it.
CREATE UNIQUE INDEX user_certificates_live_key ON user_certificates (key_id) WHERE revoked_at IS NULL;
CREATE INDEX user_certificates_by_user ON user_certificates (user_id, registered_at);
CREATE INDEX user_certificates_by_fingerprint ON user_certificates (fingerprint);
CREATE INDEX user_certificates_by_ca_serial ON user_certificates (ca_serial) WHERE ca_serial IS NOT NULL;

-- A certificate of latchkey's CA revoked there (by anyone, in any process: `/api/certs/{serial}/revoke`,
-- `latchkey cert revoke`, a forced root import) no longer signs its user in, and its registration
-- says so: revoked at the same moment, by "ca: <reason>".
CREATE TRIGGER user_certificates_revoked_with_ca AFTER UPDATE OF status ON certificates
WHEN NEW.status = 'revoked' AND OLD.status = 'valid'
BEGIN
  UPDATE user_certificates SET revoked_at = NEW.revoked_at, revoked_by = 'ca: ' || NEW.revocation_reason
  WHERE ca_serial = NEW.serial AND revoked_at IS NULL;
END;
