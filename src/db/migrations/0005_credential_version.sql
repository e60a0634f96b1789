-- Every change of an account's credentials or role bumps its credential_version. A login creates
-- its session only while the version it verified against is still current, so that a login in
-- flight when the password, role or account changes cannot create a session afterwards.
ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;
