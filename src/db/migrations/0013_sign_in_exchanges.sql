-- Sign-ins of more than one request (SCRAM over REST and /rpc/, the wsauth challenge): the state
-- between the first step and the last, written by the process that answered the first, taken
-- (once) by whichever process or node answers the last. `address` is '' when unknown.
CREATE TABLE sign_in_exchanges (
  kind TEXT NOT NULL CHECK (kind IN ('scram', 'legacy')),
  id TEXT NOT NULL,
  username TEXT NOT NULL,
  address TEXT NOT NULL,
  state TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE INDEX sign_in_exchanges_by_address ON sign_in_exchanges (kind, address, expires_at);
CREATE INDEX sign_in_exchanges_by_username ON sign_in_exchanges (username);
CREATE INDEX sign_in_exchanges_by_expiry ON sign_in_exchanges (expires_at);
