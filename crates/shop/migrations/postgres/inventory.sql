-- PostgreSQL: the tables of ../sqlite/inventory.sql, integers as BIGINT.
-- An inventory site (dc1 or dc2; each has its own database file). Every row has exactly
-- one writer, the site named in it; the other site's rows are replicas, replaced only by a
-- newer version, so merging is commutative and idempotent (see inventory/mod.rs).

-- Units each site added and removed by stock adjustments (grow-only counters).
CREATE TABLE site_stock (
    site TEXT NOT NULL CHECK (site IN ('dc1', 'dc2')),
    product_id TEXT NOT NULL,
    added BIGINT NOT NULL CHECK (added >= 0),
    removed BIGINT NOT NULL CHECK (removed >= 0),
    version BIGINT NOT NULL,
    PRIMARY KEY (site, product_id)
);

-- The reservation lines of every order, whichever site owns it. Views may hold more
-- than on hand in ap until the sites settle, so there is no CHECK against stock.
CREATE TABLE reservation (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    site TEXT NOT NULL CHECK (site IN ('dc1', 'dc2')),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'provisional', 'reserved', 'released')),
    placed_at_ms BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX reservation_by_product ON reservation (product_id, status);
CREATE INDEX reservation_by_site ON reservation (site, status);

-- What this site answered the orders routed to it (so an order is answered once).
CREATE TABLE stock_answer (
    order_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL CHECK (answer IN ('held', 'reserved', 'rejected', 'cancelled', 'compensated')),
    reason TEXT
);
