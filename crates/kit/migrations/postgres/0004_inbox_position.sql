-- Bounded inbox (docs/event-kit.md, "Bounded storage"): each inbox row records where its
-- event sits in its stream and when it was applied, so rows dedup no longer needs can go.
-- Rows from before this migration have no position and are kept.
ALTER TABLE kit_inbox ADD COLUMN stream TEXT;
ALTER TABLE kit_inbox ADD COLUMN seq BIGINT;
ALTER TABLE kit_inbox ADD COLUMN applied_at_ms BIGINT;
CREATE INDEX kit_inbox_position ON kit_inbox (consumer, stream, seq);

-- Per consumer and source stream, the inbox floor: every seq at or below it has been
-- applied (or settled by every consumer below the bus's retention). An event at or below
-- it is a duplicate, so inbox rows at or below it may be pruned.
CREATE TABLE kit_inbox_floor (
    consumer TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (consumer, stream)
);
