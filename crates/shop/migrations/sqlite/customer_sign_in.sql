-- Sign-in: an argon2id hash per customer (PHC string; NULL: cannot sign in until a password
-- is set), the service's Ed25519 signing keys, and every session it issued.
ALTER TABLE customer ADD COLUMN password_hash TEXT;
CREATE TABLE signing_key (
    kid TEXT PRIMARY KEY,
    -- The 32-byte secret, base64url; it never leaves this database.
    secret TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE customer_session (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX customer_session_of ON customer_session (customer_id);
