-- Software licensing: applications, license keys, and activations per machine.

-- AUTOINCREMENT: a deleted key's or application's id is never given to a new one.
CREATE TABLE applications (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  name            TEXT    NOT NULL,
  support_message TEXT    NOT NULL DEFAULT '',
  created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX applications_by_name ON applications (name COLLATE NOCASE);

CREATE TABLE licenses (
  id                      INTEGER PRIMARY KEY AUTOINCREMENT,
  app_id                  INTEGER NOT NULL REFERENCES applications (id),
  token                   TEXT    NOT NULL,            -- shown to admins
  token_hash              TEXT    NOT NULL UNIQUE,     -- SHA-256 (hex): every lookup goes through it
  activations_allowed     INTEGER NOT NULL CHECK (activations_allowed >= -1),  -- -1 = unlimited
  activations_used        INTEGER NOT NULL DEFAULT 0 CHECK (activations_used >= 0),
  enabled                 INTEGER NOT NULL DEFAULT 1,
  memo                    TEXT    NOT NULL DEFAULT '',
  expires_at              INTEGER,
  created_at              INTEGER NOT NULL,
  total_activations       INTEGER NOT NULL DEFAULT 0,
  total_checks            INTEGER NOT NULL DEFAULT 0,
  last_activation_at      INTEGER,
  last_activation_address TEXT,
  last_check_at           INTEGER,
  last_check_address      TEXT
);
CREATE INDEX licenses_by_app ON licenses (app_id);

CREATE TABLE activations (
  id            INTEGER PRIMARY KEY,
  license_id    INTEGER NOT NULL REFERENCES licenses (id) ON DELETE CASCADE,
  hwid          TEXT    NOT NULL,                      -- the machine: its hwid, or its name without one
  machine       TEXT,
  user          TEXT,
  address       TEXT,
  created_at    INTEGER NOT NULL,
  last_check_at INTEGER,
  UNIQUE (license_id, hwid)
);
