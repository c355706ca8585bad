//! What the catalog tells `capshop reconcile`: every product's name and price at its
//! version, the source of the order's product replica and the search index.

use kit::store::{StoreError, Tx};

use crate::contracts::facts::{ProductFact, ServiceFacts};

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let rows = tx.query("SELECT id, name, price_cents, version FROM product ORDER BY id", &[])?;
    let products = rows
        .into_iter()
        .map(|mut r| {
            Ok(ProductFact { id: r.take(0)?, name: r.take(1)?, price_cents: r.get(2)?, version: r.get(3)? })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ServiceFacts::Catalog { products })
}
