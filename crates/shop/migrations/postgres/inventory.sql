-- PostgreSQL: the tables of ../sqlite/inventory.sql, integers as BIGINT.
-- The inventory service: stock per product, the reservation lines of orders, and the
-- answer each order got (so an order is answered once). `reserved <= on_hand` is kept by
-- the code, not a CHECK: a site of the later ap mode may oversell and compensate.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY,
    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    version BIGINT NOT NULL
);

CREATE TABLE reservation (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL REFERENCES stock (product_id),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('reserved', 'released')),
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE stock_answer (
    order_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL CHECK (answer IN ('reserved', 'rejected', 'cancelled')),
    reason TEXT
);
