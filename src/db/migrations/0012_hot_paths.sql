-- PostgreSQL's side of this migration (src/db/postgres/migrations/0012_hot_paths.sql) narrows its
-- change-feed triggers and adds the activation function. SQLite has neither: processes sharing a
-- SQLite file see each other's commits through PRAGMA data_version, and an activation's statements
-- run in one process under the database's write lock. Nothing changes here; the migration exists
-- so that both backends record the same list.
SELECT 1;
