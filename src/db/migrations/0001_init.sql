-- Accounts, sessions, settings and the audit log: the appliance's foundation.

CREATE TABLE users (
  id                  INTEGER PRIMARY KEY,
  username            TEXT    NOT NULL UNIQUE,
  role                TEXT    NOT NULL CHECK (role IN ('admin', 'viewer')),
  allowed_groups      TEXT    NOT NULL DEFAULT '[]',   -- JSON array of client group names
  password_hash       TEXT    NOT NULL,                -- argon2id PHC string
  scram_salt          TEXT    NOT NULL,                -- base64
  scram_iterations    INTEGER NOT NULL,
  scram_stored_key    TEXT    NOT NULL,                -- base64
  scram_server_key    TEXT    NOT NULL,                -- base64
  legacy_salt         TEXT,     -- wsauth salt: the password input is SHA256(password + legacy_salt)
  legacy_hash         TEXT,     -- wsauth hash, kept only for --legacy-challenge-login imports
  created_at          INTEGER NOT NULL,
  password_changed_at INTEGER NOT NULL,
  last_login_at       INTEGER
);

-- Names differing only in case would let "Admin" pass for "admin" in a list: refuse such twins.
CREATE UNIQUE INDEX users_by_name_nocase ON users (username COLLATE NOCASE);

CREATE TABLE sessions (
  id            TEXT    PRIMARY KEY,                   -- SHA-256 (hex) of the bearer token
  user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  method        TEXT    NOT NULL,                      -- how the session was obtained
  address       TEXT,
  created_at    INTEGER NOT NULL,
  last_used_at  INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL                       -- the absolute limit
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL                                  -- JSON
);

CREATE TABLE audit (
  id       INTEGER PRIMARY KEY,
  at       INTEGER NOT NULL,
  actor    TEXT,
  address  TEXT,
  action   TEXT    NOT NULL,
  target   TEXT,
  outcome  TEXT    NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
  reason   TEXT
);
CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX audit_by_action ON audit (action, at);
