-- PostgreSQL: the tables of ../sqlite/shipping.sql, integers as BIGINT.
-- The shipping service: the shipments it owns, and replicas of what it decides them by.

-- Shipments as the Shipment document of shipping/events.rs, with the columns queries need.
-- `closed` marks a held shipment whose order was rejected or cancelled: it will never ship.
CREATE TABLE shipment (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    closed BIGINT NOT NULL,
    held_since_ms BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX shipment_held ON shipment (status, closed, held_since_ms);

-- Replica of orders (the whole Order document at its version), fed by order events.
CREATE TABLE order_replica (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX order_replica_customer ON order_replica (customer_id);

-- Replica of each customer's current address, fed by customer events.
CREATE TABLE customer_address (
    customer_id TEXT PRIMARY KEY,
    line1 TEXT NOT NULL,
    city TEXT NOT NULL,
    postcode TEXT NOT NULL,
    country TEXT NOT NULL,
    version BIGINT NOT NULL
);

-- The payment decision per order, from payment events (each order has one decision).
CREATE TABLE payment (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT
);
