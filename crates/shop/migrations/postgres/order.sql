-- PostgreSQL: the tables of ../sqlite/order.sql, integers as BIGINT.
-- The order service: carts and orders it owns, and replicas of what it needs from others.
CREATE TABLE cart_item (
    customer_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);

-- Orders as the Order document of order/events.rs, with the columns queries need.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_id, created_at_ms);

-- Replica of customers (the whole Customer document at its version), fed by events.
CREATE TABLE customer_replica (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    version BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL
);

-- Replica of product names and list prices, fed by catalog events.
CREATE TABLE product_replica (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    version BIGINT NOT NULL
);
