-- PostgreSQL's side of this migration (src/db/postgres/migrations/0014_registration.sql) adds the
-- registration function: a registration's statements in one call. SQLite runs the same statements
-- in one process under the database's write lock (EnrollmentStore.register). Nothing changes here;
-- the migration exists so that both backends record the same list.
SELECT 1;
