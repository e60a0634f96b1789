-- PostgreSQL translation of src/db/migrations/0007_client_certificates.sql: a client's certificate
-- names the client it was issued to.
ALTER TABLE certificates ADD COLUMN client_uuid text;
CREATE INDEX certificates_by_client ON certificates (client_uuid) WHERE client_uuid IS NOT NULL;
