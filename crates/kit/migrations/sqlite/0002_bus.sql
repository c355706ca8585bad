-- The embedded bus: a durable log in its own database file.

-- Every published message once (dedup by event id), in publish order.
CREATE TABLE bus_log (
    pos INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    published_at_ms INTEGER NOT NULL
);

-- The highest seq published per stream (the source position for lag).
CREATE TABLE bus_stream (
    stream TEXT PRIMARY KEY,
    head_seq INTEGER NOT NULL
);

-- Named durable consumers and how far into the log they have taken messages.
CREATE TABLE bus_consumer (
    name TEXT PRIMARY KEY,
    streams TEXT NOT NULL,
    per_key INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    taken_pos INTEGER NOT NULL
);

-- Messages taken but not yet acknowledged, per consumer:
--   inflight: delivered, redelivered when visible_at_ms passes without an ack;
--   ready:    due for (re)delivery at visible_at_ms (a retry, a release, a replay);
--   held:     waiting behind an earlier message of the same key (per-key consumers);
--             called parked since 0003_bus_parked.sql;
--   dead:     a dead letter, until replayed or discarded.
CREATE TABLE bus_pending (
    consumer TEXT NOT NULL,
    pos INTEGER NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    error TEXT,
    failed_at_ms INTEGER,
    PRIMARY KEY (consumer, pos)
) WITHOUT ROWID;
CREATE INDEX bus_pending_key ON bus_pending (consumer, key, pos);
CREATE INDEX bus_pending_due ON bus_pending (consumer, state, visible_at_ms);
