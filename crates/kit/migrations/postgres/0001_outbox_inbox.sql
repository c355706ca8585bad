-- The kit's tables inside every service database (PostgreSQL).

-- Committed events waiting for the relay; rows are removed once relayed.
CREATE TABLE kit_outbox (
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (stream, seq)
);

-- Per stream: the last seq handed out and the last seq the relay has published.
-- Appending locks this row until commit, so seqs are contiguous in commit order; a
-- sequence would not be (see docs/event-kit.md, "Commit order on PostgreSQL").
CREATE TABLE kit_outbox_head (
    stream TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    relayed_seq BIGINT NOT NULL
);

-- Event ids a consumer has applied, written in the same transaction as the effects.
CREATE TABLE kit_inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Per consumer and source stream: the highest seq applied and when it occurred.
CREATE TABLE kit_applied (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, stream)
);

-- The version a state-carrying replica holds per aggregate.
CREATE TABLE kit_replica_version (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
