//! The shipping service's SQL: shipments, and the replicas of orders, customers'
//! addresses and payment decisions. Shipment writes go through [`super::events::apply`],
//! which appends their events in the same transaction.

use kit::store::{Row, StoreError, Tx};

use super::events::ShipmentStatus;
use super::model::{HeldShipment, Payment, Shipment, ShippingError};
use crate::contracts::customer::Address;
use crate::contracts::order::Order;

fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Database(format!("a stored document is unreadable: {e}")))
}

fn status_text(status: ShipmentStatus) -> &'static str {
    match status {
        ShipmentStatus::Held => "held",
        ShipmentStatus::Shipped => "shipped",
    }
}

pub fn put_order(tx: &mut Tx<'_>, order: &Order) -> Result<(), StoreError> {
    let body = serde_json::to_string(order).expect("orders serialize");
    tx.execute(
        "INSERT INTO order_replica (id, customer_id, status, version, body) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status, \
         version = excluded.version, body = excluded.body",
        &[
            order.id.as_str().into(),
            order.customer_id.as_str().into(),
            order.status.as_str().into(),
            order.version.into(),
            body.as_str().into(),
        ],
    )?;
    Ok(())
}

pub fn order(tx: &mut Tx<'_>, id: &str) -> Result<Option<Order>, StoreError> {
    tx.query_opt("SELECT body FROM order_replica WHERE id = $1", &[id.into()])?
        .map(|mut row| decode(&row.take::<String>(0)?))
        .transpose()
}

/// The ids of a customer's confirmed orders that have not shipped: the ones whose
/// shipment a new address of theirs may decide.
pub fn unshipped_orders_of(tx: &mut Tx<'_>, customer_id: &str) -> Result<Vec<String>, StoreError> {
    tx.query(
        "SELECT o.id FROM order_replica o LEFT JOIN shipment s ON s.order_id = o.id \
         WHERE o.customer_id = $1 AND o.status = 'confirmed' \
         AND (s.status IS NULL OR s.status <> 'shipped') ORDER BY o.id",
        &[customer_id.into()],
    )?
    .into_iter()
    .map(|mut row| row.take(0))
    .collect()
}

pub fn put_customer_address(
    tx: &mut Tx<'_>,
    customer_id: &str,
    address: &Address,
    version: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO customer_address (customer_id, line1, city, postcode, country, version) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id) DO UPDATE SET line1 = excluded.line1, \
         city = excluded.city, postcode = excluded.postcode, country = excluded.country, version = excluded.version",
        &[
            customer_id.into(),
            address.line1.as_str().into(),
            address.city.as_str().into(),
            address.postcode.as_str().into(),
            address.country.as_str().into(),
            version.into(),
        ],
    )?;
    Ok(())
}

/// The customer's current address as shipping knows it.
pub fn customer_address(tx: &mut Tx<'_>, customer_id: &str) -> Result<Option<Address>, StoreError> {
    tx.query_opt(
        "SELECT line1, city, postcode, country FROM customer_address WHERE customer_id = $1",
        &[customer_id.into()],
    )?
    .map(|mut row| {
        Ok(Address { line1: row.take(0)?, city: row.take(1)?, postcode: row.take(2)?, country: row.take(3)? })
    })
    .transpose()
}

/// Records a payment decision; returns whether it changed what shipping knows. A decline
/// outranks an authorization, so contradictory events end the same in any order and
/// never let an order ship.
pub fn record_payment(tx: &mut Tx<'_>, order_id: &str, payment: &Payment) -> Result<bool, StoreError> {
    let (status, reason) = match payment {
        Payment::Unknown => return Ok(false),
        Payment::Authorized => ("authorized", None),
        Payment::Declined { reason } => ("declined", reason.as_deref()),
    };
    let changed = tx.execute(
        "INSERT INTO payment (order_id, status, reason) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, reason = excluded.reason \
         WHERE excluded.status = 'declined' AND payment.status <> 'declined'",
        &[order_id.into(), status.into(), reason.into()],
    )?;
    Ok(changed == 1)
}

pub fn payment(tx: &mut Tx<'_>, order_id: &str) -> Result<Payment, StoreError> {
    let row = tx.query_opt("SELECT status, reason FROM payment WHERE order_id = $1", &[order_id.into()])?;
    let Some(mut row) = row else { return Ok(Payment::Unknown) };
    Ok(match row.take::<String>(0)?.as_str() {
        "authorized" => Payment::Authorized,
        _ => Payment::Declined { reason: row.take(1)? },
    })
}

/// A shipment with what only shipping keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub shipment: Shipment,
    /// Held for good: its order was rejected or cancelled.
    pub closed: bool,
    pub held_since_ms: Option<u64>,
}

const COLUMNS: &str = "body, closed, held_since_ms";

fn stored_from_row(mut row: Row) -> Result<Stored, StoreError> {
    Ok(Stored { shipment: decode(&row.take::<String>(0)?)?, closed: row.get(1)?, held_since_ms: row.get(2)? })
}

pub fn stored(tx: &mut Tx<'_>, order_id: &str) -> Result<Option<Stored>, StoreError> {
    tx.query_opt(&format!("SELECT {COLUMNS} FROM shipment WHERE order_id = $1"), &[order_id.into()])?
        .map(stored_from_row)
        .transpose()
}

pub fn save(tx: &mut Tx<'_>, stored: &Stored) -> Result<(), StoreError> {
    let s = &stored.shipment;
    let body = serde_json::to_string(s).expect("shipments serialize");
    tx.execute(
        "INSERT INTO shipment (order_id, customer_id, status, version, closed, held_since_ms, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO UPDATE SET \
         customer_id = excluded.customer_id, status = excluded.status, version = excluded.version, \
         closed = excluded.closed, held_since_ms = excluded.held_since_ms, body = excluded.body",
        &[
            s.order_id.as_str().into(),
            s.customer_id.as_str().into(),
            status_text(s.status).into(),
            s.version.into(),
            stored.closed.into(),
            stored.held_since_ms.into(),
            body.as_str().into(),
        ],
    )?;
    Ok(())
}

pub fn shipment(tx: &mut Tx<'_>, order_id: &str) -> Result<Shipment, ShippingError> {
    stored(tx, order_id)?.map(|s| s.shipment).ok_or_else(|| ShippingError::NotFound(order_id.to_owned()))
}

/// Up to `limit` shipments of `customer_id` after the order `after`, or only the one of
/// `order_id`, by order id.
pub fn shipments(
    tx: &mut Tx<'_>,
    customer_id: &str,
    order_id: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Shipment>, StoreError> {
    let rows = tx.query(
        "SELECT body FROM shipment WHERE customer_id = $1 AND (CAST($2 AS TEXT) IS NULL OR order_id = $2) \
         AND order_id > $3 ORDER BY order_id LIMIT $4",
        &[customer_id.into(), order_id.into(), after.unwrap_or("").into(), limit.into()],
    )?;
    rows.into_iter().map(|mut row| decode(&row.take::<String>(0)?)).collect()
}

/// Every shipment, by order id (for reconcile's facts).
pub fn every_shipment(tx: &mut Tx<'_>) -> Result<Vec<Shipment>, StoreError> {
    let rows = tx.query("SELECT body FROM shipment ORDER BY order_id", &[])?;
    rows.into_iter().map(|mut row| decode(&row.take::<String>(0)?)).collect()
}

/// Held shipments still waiting for something (not closed), longest held first.
pub fn held(tx: &mut Tx<'_>) -> Result<Vec<HeldShipment>, StoreError> {
    tx.query(
        &format!(
            "SELECT {COLUMNS} FROM shipment WHERE status = 'held' AND closed = $1 \
             ORDER BY held_since_ms, order_id"
        ),
        &[false.into()],
    )?
    .into_iter()
    .map(|row| {
        let Stored { shipment: s, held_since_ms, .. } = stored_from_row(row)?;
        Ok(HeldShipment {
            order_id: s.order_id,
            customer_id: s.customer_id,
            address: s.address,
            reason: s.reason.unwrap_or_default(),
            version: s.version,
            held_since_ms: held_since_ms.unwrap_or_default(),
        })
    })
    .collect()
}
