//! The bestsellers: units of each product in every order placed, counted from the
//! OrderPlaced events `search.orders` applies (the order service publishes exactly one per
//! order, in the transaction that writes the order).
//!
//! It is a counter, with no row per order and no version to gate on: a redelivered
//! OrderPlaced would count its units again, and only the consumer's inbox, committed in the
//! same transaction, keeps it out. `capshop reconcile` checks it against the lines of the
//! order service's orders.
//!
//! Why orders placed rather than sales net of cancellations: an OrderCancelled carries the
//! order as it is after the cancel, which does not say whether it had been confirmed (a
//! site's apology cancels orders both waiting for stock and confirmed), so units sold could
//! not be taken back exactly without keeping each order's past here.

use kit::store::{StoreError, Tx};
use serde::Serialize;

use crate::contracts::order::Order;

/// One product of the bestsellers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Bestseller {
    pub product_id: String,
    /// The product's name as the index holds it (null before its product event arrived).
    pub name: Option<String>,
    /// Units of the product in every order placed, whatever became of the order since.
    pub units_ordered: u64,
}

/// Counts the units of every line of `order`, just placed.
pub fn count(tx: &mut Tx<'_>, order: &Order) -> Result<(), StoreError> {
    for line in &order.lines {
        tx.execute(
            "INSERT INTO search_units_ordered (product_id, units) VALUES ($1, $2) \
             ON CONFLICT (product_id) DO UPDATE SET units = search_units_ordered.units + excluded.units",
            &[line.product_id.as_str().into(), u64::from(line.quantity).into()],
        )?;
    }
    Ok(())
}

/// The `limit` most ordered products, most units first.
pub fn top(tx: &mut Tx<'_>, limit: u32) -> Result<Vec<Bestseller>, StoreError> {
    let rows = tx.query(
        "SELECT u.product_id, d.title, u.units FROM search_units_ordered u \
         LEFT JOIN search_document d ON d.kind = 'product' AND d.id = u.product_id \
         ORDER BY u.units DESC, u.product_id LIMIT $1",
        &[limit.into()],
    )?;
    rows.into_iter()
        .map(|mut r| Ok(Bestseller { product_id: r.take(0)?, name: r.take(1)?, units_ordered: r.get(2)? }))
        .collect()
}

/// Every product's count, by product id.
pub fn all(tx: &mut Tx<'_>) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = tx.query("SELECT product_id, units FROM search_units_ordered ORDER BY product_id", &[])?;
    rows.into_iter().map(|mut r| Ok((r.take(0)?, r.get(1)?))).collect()
}

/// Whether the counter counted from the shop's first order (the migration that made it met
/// no order already indexed).
pub fn counted_from_the_start(tx: &mut Tx<'_>) -> Result<bool, StoreError> {
    let from_the_start: i64 = tx.query_one("SELECT from_the_start FROM search_counting", &[])?.get(0)?;
    Ok(from_the_start == 1)
}
