-- PostgreSQL translation of src/db/migrations/0009_stats.sql: hourly roll-ups for the dashboard's
-- charts. `scope` is '' for everything, or 'license:<id>', 'app:<id>' or 'group:<name>'; `hour` is
-- the start of the hour in ms since the epoch (UTC). SQLite's WITHOUT ROWID has no equivalent
-- here: an ordinary table with the same primary key.
CREATE TABLE stats_hourly (
  scope  text    NOT NULL,
  metric text    NOT NULL,
  hour   bigint  NOT NULL,
  value  bigint  NOT NULL,
  PRIMARY KEY (scope, metric, hour)
);
-- Retention deletes the oldest hours first, a bounded number of rows at a time.
CREATE INDEX stats_hourly_by_hour ON stats_hourly (hour);
-- A deleted key's or application's history goes with it (their ids are never given again).
CREATE FUNCTION licenses_stats_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM stats_hourly WHERE scope = 'license:' || OLD.id;
  RETURN NULL;
END;
$$;
CREATE TRIGGER licenses_stats_deleted AFTER DELETE ON licenses
FOR EACH ROW EXECUTE FUNCTION licenses_stats_deleted();
CREATE FUNCTION applications_stats_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM stats_hourly WHERE scope = 'app:' || OLD.id;
  RETURN NULL;
END;
$$;
CREATE TRIGGER applications_stats_deleted AFTER DELETE ON applications
FOR EACH ROW EXECUTE FUNCTION applications_stats_deleted();
