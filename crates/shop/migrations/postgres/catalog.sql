-- PostgreSQL: the tables of ../sqlite/catalog.sql, integers as BIGINT.
-- The catalog service: products and their prices.
CREATE TABLE product (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents > 0),
    version BIGINT NOT NULL,
    -- How many quote lines named the product: a local statistic behind GET /popular,
    -- not domain state, so it is published nowhere.
    popularity BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX product_popularity ON product (popularity DESC, id);
