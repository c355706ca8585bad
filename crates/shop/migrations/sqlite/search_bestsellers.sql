-- Units of each product in every order placed, counted from the OrderPlaced events the
-- search.orders consumer applied (GET /bestsellers). A counter with no row per order:
-- only the inbox, committed in the same transaction, keeps a redelivery from counting twice.
CREATE TABLE search_units_ordered (
    product_id TEXT PRIMARY KEY,
    units INTEGER NOT NULL
);

-- Whether the counter began with the shop's first order: not when this migration met
-- orders already indexed (a shop upgraded from a version without the counter), whose
-- units it never counted; reconcile then does not check it.
CREATE TABLE search_counting (from_the_start INTEGER NOT NULL);
INSERT INTO search_counting (from_the_start)
    SELECT CASE WHEN EXISTS (SELECT 1 FROM search_document WHERE kind = 'order') THEN 0 ELSE 1 END;
