-- PostgreSQL: the tables of ../sqlite/customer.sql, integers as BIGINT.
-- The customer service: customers with their address and payment method.
CREATE TABLE customer (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    line1 TEXT NOT NULL,
    city TEXT NOT NULL,
    postcode TEXT NOT NULL,
    country TEXT NOT NULL,
    payment_kind TEXT NOT NULL,
    payment_last4 TEXT,
    version BIGINT NOT NULL
);
