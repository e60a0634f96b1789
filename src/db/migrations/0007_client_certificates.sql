-- Enrollment ends with a certificate (SPEC §4): a client's certificate names the client it was
-- issued to, so that revoking its key, deleting the client or removing its host revokes it, and
-- so that the certificate alone admits the client on the mTLS listener.
ALTER TABLE certificates ADD COLUMN client_uuid TEXT;
CREATE INDEX certificates_by_client ON certificates (client_uuid) WHERE client_uuid IS NOT NULL;
