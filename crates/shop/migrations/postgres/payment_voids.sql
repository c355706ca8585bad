-- Orders whose placement the order service abandoned: their authorization (if any) is
-- void, and one asked for after the void is refused.
CREATE TABLE voids (
    order_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    voided_at_ms BIGINT NOT NULL
);
