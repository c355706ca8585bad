//! What the shipping service tells `capshop reconcile`: every shipment, and its replicas
//! of orders and of customers' addresses with their versions.

use kit::store::{StoreError, Tx};

use super::store;
use crate::contracts::customer::Address;
use crate::contracts::facts::{AddressCopy, OrderCopy, ServiceFacts};
use crate::contracts::order::OrderStatus;

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let shipments = store::every_shipment(tx)?.iter().map(Into::into).collect();
    let order_replicas = tx
        .query("SELECT id, status, version FROM order_replica ORDER BY id", &[])?
        .into_iter()
        .map(|mut r| {
            let status: String = r.take(1)?;
            let status = OrderStatus::parse(&status)
                .ok_or_else(|| StoreError::Database(format!("unknown order status {status:?}")))?;
            Ok(OrderCopy { id: r.take(0)?, status, version: r.get(2)? })
        })
        .collect::<Result<_, StoreError>>()?;
    let customer_addresses = tx
        .query(
            "SELECT customer_id, line1, city, postcode, country, version FROM customer_address ORDER BY customer_id",
            &[],
        )?
        .into_iter()
        .map(|mut r| {
            Ok(AddressCopy {
                customer_id: r.take(0)?,
                address: Address { line1: r.take(1)?, city: r.take(2)?, postcode: r.take(3)?, country: r.take(4)? },
                version: r.get(5)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ServiceFacts::Shipping { shipments, order_replicas, customer_addresses })
}
