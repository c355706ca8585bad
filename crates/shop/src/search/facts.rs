//! What the search service tells `capshop reconcile`: the version of every document it
//! indexed, to be checked against the catalog's products and the order service's orders,
//! and its bestsellers counter, to be checked against the orders' lines.

use kit::store::{StoreError, Tx};

use super::bestsellers;
use crate::contracts::facts::{DocumentFact, ServiceFacts, UnitsOrderedFact};

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let rows = tx.query("SELECT kind, id, version FROM search_document ORDER BY kind, id", &[])?;
    let documents = rows
        .into_iter()
        .map(|mut r| Ok(DocumentFact { kind: r.take(0)?, id: r.take(1)?, version: r.get(2)? }))
        .collect::<Result<_, StoreError>>()?;
    let units_ordered = bestsellers::all(tx)?
        .into_iter()
        .map(|(product_id, units)| UnitsOrderedFact { product_id, units })
        .collect();
    let counted_from_the_start = bestsellers::counted_from_the_start(tx)?;
    Ok(ServiceFacts::Search { documents, units_ordered, counted_from_the_start })
}
