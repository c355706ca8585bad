-- Retention: the log is pruned of positions every consumer has settled (see
-- docs/event-kit.md, "Bounded storage"). Per stream, the highest seq pruned so far: a
-- message published again at or below it is a copy of one every consumer has settled, and
-- is dropped as the unique event id would have dropped it before the prune.
ALTER TABLE bus_stream ADD COLUMN pruned_seq INTEGER NOT NULL DEFAULT 0;
