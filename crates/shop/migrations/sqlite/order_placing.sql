-- Placements under way (`placing` is a reserved word in PostgreSQL): written before
-- payment is asked, deleted in the transaction that commits the order. A row that
-- outlives its bound is abandoned (the order will never be committed) and payment is told
-- to void the order's authorization; the row is deleted once payment has.
CREATE TABLE placements (
    order_id TEXT PRIMARY KEY,
    started_at_ms INTEGER NOT NULL,
    abandoned INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX placements_started ON placements (started_at_ms);
