-- A consumer's settled position: every position at or below acked_pos is acknowledged, or
-- has a row in bus_pending (retrying, parked, dead, or acknowledged out of order). Fresh
-- deliveries no longer get a pending row each: the attachment keeps them in memory, and a
-- new attachment turns whatever lies between acked_pos and taken_pos without a row into
-- due redeliveries (see docs/event-kit.md, "The embedded log"). Before this migration every
-- taken message had a row until it was acknowledged, so acked_pos starts at taken_pos.
ALTER TABLE bus_consumer ADD COLUMN acked_pos INTEGER NOT NULL DEFAULT 0;
UPDATE bus_consumer SET acked_pos = taken_pos;
-- Bumped by every attachment, so one that was replaced cannot move the positions.
ALTER TABLE bus_consumer ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
