-- PostgreSQL translation of src/db/migrations/0010_nodes.sql: nodes with leases, and which node
-- each connected client is on.
CREATE TABLE nodes (
  id          text   PRIMARY KEY,
  started_at  bigint NOT NULL,
  lease_until bigint NOT NULL
);
CREATE TABLE client_presence (
  uuid    text   PRIMARY KEY,
  node_id text   NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
  claim   text   NOT NULL,
  since   bigint NOT NULL
);
CREATE INDEX client_presence_by_node ON client_presence (node_id);
-- The change feed (PostgreSQL only; SQLite processes see each other's commits through PRAGMA
-- data_version): a committed write to a table that decides access notifies every node, naming the
-- table and the writer (its application_name, `latchkey-<node id>`), so that the others drop
-- their caches and re-check their connections. One notification per table and transaction.
CREATE FUNCTION latchkey_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('latchkey_changes', TG_TABLE_NAME || ' ' || current_setting('application_name'));
  RETURN NULL;
END;
$$;
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
-- Sessions: only their end matters to other nodes (a new one is found in the database; last-use
-- updates every few seconds would only empty the other nodes' caches).
CREATE TRIGGER sessions_changed AFTER DELETE ON sessions
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER settings_changed AFTER INSERT OR UPDATE OR DELETE ON settings
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER enrollment_keys_changed AFTER INSERT OR UPDATE OR DELETE ON enrollment_keys
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER clients_changed AFTER DELETE ON clients
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER applications_changed AFTER INSERT OR UPDATE OR DELETE ON applications
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER licenses_changed AFTER INSERT OR UPDATE OR DELETE ON licenses
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER activations_changed AFTER INSERT OR DELETE ON activations
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER ca_roots_changed AFTER INSERT OR UPDATE OR DELETE ON ca_roots
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER certificates_changed AFTER UPDATE OR DELETE ON certificates
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER user_certificates_changed AFTER UPDATE OR DELETE ON user_certificates
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
CREATE TRIGGER hosts_changed AFTER INSERT OR DELETE ON hosts
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_changed();
