-- Idempotent creates: a claimed Idempotency-Key per route, with the answer of the request
-- that claimed it, written in the same transaction as that request's effect.
CREATE TABLE idempotency_key (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    -- SHA-256 of the request, so the same key with another request is refused.
    request_digest TEXT NOT NULL,
    -- The request holding the claim; a retry that takes an abandoned claim over changes it.
    owner TEXT NOT NULL,
    -- 0 while the claiming request runs, then the HTTP status it answered.
    status BIGINT NOT NULL,
    body TEXT,
    consistency_token TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (route, key)
);
CREATE INDEX idempotency_key_age ON idempotency_key (created_at_ms);
