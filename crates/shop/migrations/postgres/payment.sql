-- PostgreSQL: the tables of ../sqlite/payment.sql, integers as BIGINT.
-- The payment service: one authorization decision per order. (Plural, like `orders`:
-- AUTHORIZATION is a reserved word in PostgreSQL.)
CREATE TABLE authorizations (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
    payment_kind TEXT NOT NULL,
    payment_last4 TEXT,
    status TEXT NOT NULL CHECK (status IN ('authorized', 'declined')),
    reason TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX authorizations_customer ON authorizations (customer_id);
