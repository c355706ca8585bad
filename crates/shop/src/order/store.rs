//! The order service's SQL: carts, orders, and the replicas of customers and products.
//! Every order write appends its event to the outbox in the same transaction.

use kit::clock;
use kit::outbox::Outbox;
use kit::store::{Dialect, StoreError, Tx};
use serde::Serialize;

use super::events;
use super::model::{Order, OrderError};
use crate::contracts::customer::Customer;

/// A cart line with the product's name and list price as the replica knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CartLine {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    /// The list price from the replica; the binding price comes from the catalog's quote.
    pub list_price_cents: u64,
}

pub fn cart(tx: &mut Tx<'_>, customer_id: &str) -> Result<Vec<CartLine>, StoreError> {
    tx.query(
        "SELECT c.product_id, coalesce(p.name, c.product_id), c.quantity, coalesce(p.price_cents, 0) \
         FROM cart_item c LEFT JOIN product_replica p ON p.id = c.product_id \
         WHERE c.customer_id = $1 ORDER BY c.product_id",
        &[customer_id.into()],
    )?
    .into_iter()
    .map(|mut r| {
        Ok(CartLine {
            product_id: r.take(0)?,
            name: r.take(1)?,
            quantity: r.get(2)?,
            list_price_cents: r.get(3)?,
        })
    })
    .collect()
}

/// Adds `quantity` of a product, capped at `max` per line; returns the cart.
pub fn add_to_cart(
    tx: &mut Tx<'_>,
    customer_id: &str,
    product_id: &str,
    quantity: u32,
    max: u32,
) -> Result<Vec<CartLine>, OrderError> {
    if product(tx, product_id)?.is_none() {
        return Err(OrderError::UnknownProduct(product_id.to_owned()));
    }
    // The smaller of two values is `min` in SQLite and `LEAST` in PostgreSQL.
    let sql = match tx.dialect() {
        Dialect::Sqlite => {
            "INSERT INTO cart_item (customer_id, product_id, quantity) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id, product_id) DO UPDATE SET quantity = min(quantity + excluded.quantity, $4)"
        }
        Dialect::Postgres => {
            "INSERT INTO cart_item (customer_id, product_id, quantity) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id, product_id) DO UPDATE SET quantity = LEAST(cart_item.quantity + excluded.quantity, $4)"
        }
    };
    tx.execute(sql, &[customer_id.into(), product_id.into(), quantity.into(), max.into()])?;
    Ok(cart(tx, customer_id)?)
}

pub fn remove_from_cart(
    tx: &mut Tx<'_>,
    customer_id: &str,
    product_id: &str,
) -> Result<Vec<CartLine>, StoreError> {
    tx.execute(
        "DELETE FROM cart_item WHERE customer_id = $1 AND product_id = $2",
        &[customer_id.into(), product_id.into()],
    )?;
    cart(tx, customer_id)
}

/// The replica's name and list price of a product.
pub fn product(tx: &mut Tx<'_>, product_id: &str) -> Result<Option<(String, u64)>, StoreError> {
    tx.query_opt("SELECT name, price_cents FROM product_replica WHERE id = $1", &[product_id.into()])?
        .map(|mut r| Ok((r.take(0)?, r.get(1)?)))
        .transpose()
}

pub fn put_product(
    tx: &mut Tx<'_>,
    id: &str,
    name: &str,
    price_cents: u64,
    version: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO product_replica (id, name, price_cents, version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents, version = excluded.version",
        &[id.into(), name.into(), price_cents.into(), version.into()],
    )?;
    Ok(())
}

/// A customer as the replica holds it, with when that version occurred.
pub struct ReplicatedCustomer {
    pub customer: Customer,
    pub occurred_at_ms: u64,
}

pub fn replicated_customer(tx: &mut Tx<'_>, id: &str) -> Result<Option<ReplicatedCustomer>, StoreError> {
    tx.query_opt("SELECT body, occurred_at_ms FROM customer_replica WHERE id = $1", &[id.into()])?
        .map(|mut r| {
            let body: String = r.take(0)?;
            let customer = serde_json::from_str(&body).map_err(|e| StoreError::Database(e.to_string()))?;
            Ok(ReplicatedCustomer { customer, occurred_at_ms: r.get(1)? })
        })
        .transpose()
}

pub fn put_customer(tx: &mut Tx<'_>, customer: &Customer, occurred_at_ms: u64) -> Result<(), StoreError> {
    let body = serde_json::to_string(customer).expect("customers serialize");
    tx.execute(
        "INSERT INTO customer_replica (id, body, version, occurred_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, version = excluded.version, occurred_at_ms = excluded.occurred_at_ms",
        &[customer.id.as_str().into(), body.as_str().into(), customer.version.into(), occurred_at_ms.into()],
    )?;
    Ok(())
}

pub fn order(tx: &mut Tx<'_>, id: &str) -> Result<Order, OrderError> {
    let row = tx.query_opt("SELECT body FROM orders WHERE id = $1", &[id.into()])?;
    let mut row = row.ok_or_else(|| OrderError::NotFound(id.to_owned()))?;
    let body: String = row.take(0)?;
    serde_json::from_str(&body).map_err(|e| OrderError::Store(StoreError::Database(e.to_string())))
}

/// Up to `limit` orders of `customer_id` after the id `after`, oldest first (ids are
/// UUIDv7, so by id is by time).
pub fn orders_of(
    tx: &mut Tx<'_>,
    customer_id: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Order>, StoreError> {
    tx.query(
        "SELECT body FROM orders WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        &[customer_id.into(), after.unwrap_or("").into(), limit.into()],
    )?
    .into_iter()
    .map(|mut r| {
        let body: String = r.take(0)?;
        serde_json::from_str(&body).map_err(|e| StoreError::Database(e.to_string()))
    })
    .collect()
}

/// Records a new order, empties the cart it came from, and appends `kinds` (each event
/// bumps the version, the first being 1).
pub fn place(
    tx: &mut Tx<'_>,
    outbox: &Outbox,
    mut order: Order,
    kinds: &[&str],
    now_ms: u64,
) -> Result<Order, OrderError> {
    let mut appended = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        order.version = i as u64 + 1;
        appended.push(events::event(kind, &order));
    }
    let body = serde_json::to_string(&order).expect("orders serialize");
    tx.execute(
        "INSERT INTO orders (id, customer_id, status, version, created_at_ms, body) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            order.id.as_str().into(),
            order.customer_id.as_str().into(),
            order.status.as_str().into(),
            order.version.into(),
            now_ms.into(),
            body.as_str().into(),
        ],
    )?;
    tx.execute("DELETE FROM cart_item WHERE customer_id = $1", &[order.customer_id.as_str().into()])?;
    outbox.append(tx, appended)?;
    Ok(order)
}

/// Saves a changed order at the next version and appends its event.
pub fn change(tx: &mut Tx<'_>, outbox: &Outbox, mut order: Order, kind: &str) -> Result<Order, OrderError> {
    order.version += 1;
    let body = serde_json::to_string(&order).expect("orders serialize");
    tx.execute(
        "UPDATE orders SET status = $2, version = $3, body = $4 WHERE id = $1",
        &[order.id.as_str().into(), order.status.as_str().into(), order.version.into(), body.as_str().into()],
    )?;
    outbox.append(tx, vec![events::event(kind, &order)])?;
    Ok(order)
}

/// Milliseconds since the replica's version of a customer occurred.
pub fn age_ms(occurred_at_ms: u64) -> u64 {
    clock::now_ms().saturating_sub(occurred_at_ms)
}
