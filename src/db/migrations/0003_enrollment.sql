-- Pre-shared enrollment keys (woho seed) and the clients that registered with them.

CREATE TABLE enrollment_keys (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  key           TEXT    NOT NULL,                -- XXXX-XXXX-XXXX, shown to admins
  key_hash      TEXT    NOT NULL UNIQUE,         -- SHA-256 (hex) of the key without dashes: every lookup goes through it
  label         TEXT    NOT NULL DEFAULT '',
  status        TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'revoked')),
  client_uuid   TEXT,                            -- the client an active key is bound to
  client_group  TEXT,                            -- group given to the client that enrolls with it
  usage_count   INTEGER NOT NULL DEFAULT 0,      -- successful registrations
  created_at    INTEGER NOT NULL,
  first_used_at INTEGER,
  last_used_at  INTEGER,
  expires_at    INTEGER
);
CREATE INDEX enrollment_keys_by_client ON enrollment_keys (client_uuid);

CREATE TABLE clients (
  uuid          TEXT    PRIMARY KEY,
  name          TEXT    NOT NULL,
  hostname      TEXT    NOT NULL,
  client_group  TEXT,
  key_id        INTEGER REFERENCES enrollment_keys (id) ON DELETE SET NULL,
  version       TEXT    NOT NULL DEFAULT '',
  os            TEXT    NOT NULL DEFAULT '',
  address       TEXT,
  interfaces    TEXT    NOT NULL DEFAULT '[]',   -- JSON [{name, addresses:[...]}]
  first_seen_at INTEGER NOT NULL,
  last_seen_at  INTEGER NOT NULL
);
