//! What the order service tells `capshop reconcile`: every order as it publishes it, its
//! replicas of customers and products with their versions, and its placements under way.

use kit::store::{StoreError, Tx};

use super::model::Order;
use crate::contracts::customer::Customer;
use crate::contracts::facts::{ProductFact, ServiceFacts};

fn decode<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Database(e.to_string()))
}

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let orders = tx
        .query("SELECT body FROM orders ORDER BY id", &[])?
        .into_iter()
        .map(|mut r| decode::<Order>(&r.take::<String>(0)?).map(|o| (&o).into()))
        .collect::<Result<_, _>>()?;
    // The body is the whole customer; the column is what the version gate compared.
    let customer_replicas = tx
        .query("SELECT body, version FROM customer_replica ORDER BY id", &[])?
        .into_iter()
        .map(|mut r| {
            let mut customer: Customer = decode(&r.take::<String>(0)?)?;
            customer.version = r.get(1)?;
            Ok(customer)
        })
        .collect::<Result<_, StoreError>>()?;
    let product_replicas = tx
        .query("SELECT id, name, price_cents, version FROM product_replica ORDER BY id", &[])?
        .into_iter()
        .map(|mut r| {
            Ok(ProductFact { id: r.take(0)?, name: r.take(1)?, price_cents: r.get(2)?, version: r.get(3)? })
        })
        .collect::<Result<_, StoreError>>()?;
    let placing = super::placing::under_way(tx)?;
    Ok(ServiceFacts::Order { orders, customer_replicas, product_replicas, placing })
}
