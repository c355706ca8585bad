//! What the customer service tells `capshop reconcile`: every customer at its version,
//! the source the order's and shipping's replicas are checked against.

use kit::store::{StoreError, Tx};

use super::store;
use crate::contracts::facts::ServiceFacts;

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let customers = store::list(tx, None, u32::MAX).map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(ServiceFacts::Customer { customers: customers.iter().map(Into::into).collect() })
}
