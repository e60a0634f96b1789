-- PostgreSQL translation of src/db/migrations/0013_sign_in_exchanges.sql: the state of sign-ins
-- of more than one request, between their first step and their last, shared by every node.
CREATE TABLE sign_in_exchanges (
  kind       text   NOT NULL CHECK (kind IN ('scram', 'legacy')),
  id         text   NOT NULL,
  username   text   NOT NULL,
  address    text   NOT NULL,
  state      text   NOT NULL,
  expires_at bigint NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE INDEX sign_in_exchanges_by_address ON sign_in_exchanges (kind, address, expires_at);
CREATE INDEX sign_in_exchanges_by_username ON sign_in_exchanges (username);
CREATE INDEX sign_in_exchanges_by_expiry ON sign_in_exchanges (expires_at);
