-- PostgreSQL translation of src/db/migrations/0004_check_counters.sql: check counters move to a
-- narrow table of their own. A key that was never checked has no row.
CREATE TABLE license_checks (
  license_id   bigint  PRIMARY KEY REFERENCES licenses (id) ON DELETE CASCADE,
  total        bigint  NOT NULL DEFAULT 0,
  last_at      bigint,
  last_address text
);
INSERT INTO license_checks (license_id, total, last_at, last_address)
  SELECT id, total_checks, last_check_at, last_check_address FROM licenses
  WHERE total_checks > 0 OR last_check_at IS NOT NULL;
ALTER TABLE licenses DROP COLUMN total_checks;
ALTER TABLE licenses DROP COLUMN last_check_at;
ALTER TABLE licenses DROP COLUMN last_check_address;
