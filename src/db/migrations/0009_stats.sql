-- Hourly roll-ups for the dashboard's charts, counted as events happen (src/core/stats.ts), so that
-- a chart never reads the audit log or the check counters. `scope` is '' for everything, or one
-- license key ('license:<id>'), application ('app:<id>') or client group ('group:<name>'); `hour`
-- is the start of the hour in ms since the epoch (UTC). Counts add up; a gauge (clients_online)
-- keeps the hour's peak. Charts read one scope and metric over a range of hours: the primary key.
CREATE TABLE stats_hourly (
  scope  TEXT    NOT NULL,
  metric TEXT    NOT NULL,
  hour   INTEGER NOT NULL,
  value  INTEGER NOT NULL,
  PRIMARY KEY (scope, metric, hour)
) WITHOUT ROWID;
-- Retention deletes the oldest hours first, a bounded number of rows at a time.
CREATE INDEX stats_hourly_by_hour ON stats_hourly (hour);
-- A deleted key's or application's history goes with it (their ids are never given again).
CREATE TRIGGER licenses_stats_deleted AFTER DELETE ON licenses
BEGIN
  DELETE FROM stats_hourly WHERE scope = 'license:' || OLD.id;
END;
CREATE TRIGGER applications_stats_deleted AFTER DELETE ON applications
BEGIN
  DELETE FROM stats_hourly WHERE scope = 'app:' || OLD.id;
END;
