-- Sign-in, replicated from the customer stream into every service that checks tokens:
-- the public keys session tokens are signed with, and the sessions revoked since.
CREATE TABLE session_key (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL
);
CREATE TABLE revoked_session (
    session_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    -- The token expires then anyway: the row is pruned after it.
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX revoked_session_expiry ON revoked_session (expires_at_ms);
