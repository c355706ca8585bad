-- Units of each product in every order placed, counted from the OrderPlaced events the
-- search.orders consumer applied (GET /bestsellers). A counter with no row per order:
-- only the inbox, committed in the same transaction, keeps a redelivery from counting twice.
CREATE TABLE search_units_ordered (
    product_id TEXT PRIMARY KEY,
    units BIGINT NOT NULL
);
