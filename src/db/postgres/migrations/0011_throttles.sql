-- PostgreSQL translation of src/db/migrations/0011_throttles.sql: failed-login counters shared by
-- every node.
CREATE TABLE throttle_buckets (
  limiter    text   NOT NULL,
  key        text   NOT NULL,
  state      text,
  expires_at bigint NOT NULL,
  PRIMARY KEY (limiter, key)
);
CREATE INDEX throttle_buckets_by_expiry ON throttle_buckets (expires_at);
