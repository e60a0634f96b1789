-- Failed-login counters shared by every process and node on this database (SPEC §11): a throttle
-- holds for the account and the address whichever node the guesses reach. `state` is the
-- limiter's own bucket (JSON); a bucket past `expires_at` is forgotten.
CREATE TABLE throttle_buckets (
  limiter TEXT NOT NULL,
  key TEXT NOT NULL,
  state TEXT,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (limiter, key)
);
CREATE INDEX throttle_buckets_by_expiry ON throttle_buckets (expires_at);
