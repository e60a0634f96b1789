-- The built-in certificate authority (SPEC §5): its root, the certificates it issued, the CRL it
-- signs, the mTLS listener's certificate, and the hosts allowed to report over mTLS. The CA key
-- lives here like every other thing that decides access (§11), so that a backup carries it.

CREATE TABLE ca_roots (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  certificate_pem TEXT    NOT NULL,
  key_pem         TEXT,                            -- PKCS#8 PEM; NULL once retired: a replaced root never signs again
  fingerprint     TEXT    NOT NULL,                -- SHA-256 of the certificate's DER, lowercase hex
  source          TEXT    NOT NULL CHECK (source IN ('generated', 'imported')),
  created_at      INTEGER NOT NULL,
  created_by      TEXT    NOT NULL,
  retired_at      INTEGER
);
-- At most one current root: two processes starting at once cannot both store one.
CREATE UNIQUE INDEX ca_roots_one_current ON ca_roots ((retired_at IS NULL)) WHERE retired_at IS NULL;

CREATE TABLE certificates (
  serial            TEXT    PRIMARY KEY,           -- lowercase hex, 127 random bits
  ca_id             INTEGER NOT NULL REFERENCES ca_roots (id),
  fingerprint       TEXT    NOT NULL UNIQUE,       -- SHA-256 of the DER, lowercase hex
  kind              TEXT    NOT NULL CHECK (kind IN ('server', 'host', 'client', 'user')),
  common_name       TEXT    NOT NULL,
  sans              TEXT    NOT NULL DEFAULT '[]', -- JSON: DNS names, then IP addresses
  usages            TEXT    NOT NULL DEFAULT '[]', -- JSON: extended key usages (serverAuth, clientAuth)
  hostname          TEXT,                          -- the host it was issued to (lower-case); revoked with it
  der               BLOB    NOT NULL,
  not_before        INTEGER NOT NULL,
  not_after         INTEGER NOT NULL,
  status            TEXT    NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'revoked')),
  revoked_at        INTEGER,
  revocation_reason TEXT,
  created_at        INTEGER NOT NULL,
  created_by        TEXT    NOT NULL
);
CREATE INDEX certificates_by_hostname ON certificates (hostname);
CREATE INDEX certificates_by_root ON certificates (ca_id, status);
CREATE INDEX certificates_by_created ON certificates (created_at);

-- The mTLS listener's certificate, one per set of names (each node names its own machine).
CREATE TABLE ca_server_certificates (
  sans       TEXT    PRIMARY KEY,                  -- JSON, sorted: the names it was issued for
  serial     TEXT    NOT NULL REFERENCES certificates (serial),
  key_pem    TEXT    NOT NULL,                     -- PKCS#8 PEM of the listener's key
  updated_at INTEGER NOT NULL
);

-- The current CRL of each root; its number only grows (across roots too).
CREATE TABLE ca_crls (
  ca_id         INTEGER PRIMARY KEY REFERENCES ca_roots (id),
  number        INTEGER NOT NULL,
  der           BLOB    NOT NULL,
  this_update   INTEGER NOT NULL,
  next_update   INTEGER NOT NULL,
  revoked_count INTEGER NOT NULL                   -- the root's revoked certificates when it was built: more now means stale
);

-- Hosts allowed to report over mTLS (woodstock seed). Hostnames are case-insensitive in DNS:
-- stored lower-case, so that the key, the certificate's CN and the URL compare as text.
CREATE TABLE hosts (
  hostname       TEXT    PRIMARY KEY CHECK (hostname = lower(hostname)),
  host_group     TEXT,
  created_at     INTEGER NOT NULL,
  created_by     TEXT    NOT NULL,
  report         TEXT,                             -- JSON of the latest report: {interfaces, port, version}
  last_report_at INTEGER,
  last_address   TEXT
);
CREATE INDEX hosts_by_group ON hosts (host_group);
