-- The nodes serving this database and the clients connected to each (SPEC §11). A node holds a
-- lease it renews every few seconds; a client is online on one node at a time, and free to connect
-- to another once its node's lease has run out (a node that died). With SQLite there is one node.
CREATE TABLE nodes (
  id TEXT PRIMARY KEY,
  started_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL
);
CREATE TABLE client_presence (
  uuid TEXT PRIMARY KEY,
  node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
  -- The registration that holds it: a socket that closes releases its own claim, not a newer one.
  claim TEXT NOT NULL,
  since INTEGER NOT NULL
);
CREATE INDEX client_presence_by_node ON client_presence (node_id);
