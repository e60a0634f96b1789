-- PostgreSQL translation of src/db/migrations/0005_credential_version.sql: every change of an
-- account's credentials or role bumps its credential_version.
ALTER TABLE users ADD COLUMN credential_version bigint NOT NULL DEFAULT 0;
