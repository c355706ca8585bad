-- The relay's position per stream, apart from kit_outbox_head: every appending writer
-- locks its stream's head row until it commits, and the relay must not wait behind a
-- long writer to record what it published. Writers never touch this table.
CREATE TABLE kit_outbox_relayed (
    stream TEXT PRIMARY KEY,
    relayed_seq BIGINT NOT NULL
);
INSERT INTO kit_outbox_relayed (stream, relayed_seq) SELECT stream, relayed_seq FROM kit_outbox_head;
-- Gone from the head, so nothing reads a position that no longer moves.
ALTER TABLE kit_outbox_head DROP COLUMN relayed_seq;
