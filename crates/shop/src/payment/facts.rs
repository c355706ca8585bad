//! What the payment service tells `capshop reconcile`: every authorization decision and
//! the order it was made for.

use kit::store::{StoreError, Tx};

use crate::contracts::facts::{AuthorizationFact, ServiceFacts};

/// Reads the facts in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>) -> Result<ServiceFacts, StoreError> {
    let rows = tx.query(
        "SELECT a.id, a.order_id, a.status, a.created_at_ms, CASE WHEN v.order_id IS NULL THEN 0 ELSE 1 END \
         FROM authorizations a LEFT JOIN voids v ON v.order_id = a.order_id ORDER BY a.order_id",
        &[],
    )?;
    let authorizations = rows
        .into_iter()
        .map(|mut r| {
            let status = super::store::status(&r.take::<String>(2)?, r.get(4)?)?;
            Ok(AuthorizationFact { id: r.take(0)?, order_id: r.take(1)?, status, created_at_ms: r.get(3)? })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(ServiceFacts::Payment { authorizations })
}
