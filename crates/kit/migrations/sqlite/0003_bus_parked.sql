-- The state of a message waiting behind an earlier one of its key is called what the
-- design calls it: parked (it was 'held').
UPDATE bus_pending SET state = 'parked' WHERE state = 'held';
