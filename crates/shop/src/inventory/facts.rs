//! What an inventory site tells `capshop reconcile`: both sites' counters and every
//! reservation line as this site holds them (its own rows and its copies of the other's).

use kit::store::{StoreError, Tx};

use super::store;
use crate::contracts::facts::{LineFact, ServiceFacts};
use crate::contracts::inventory::{Site, StockCounters};

/// Reads the facts of `site` in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>, site: Site) -> Result<ServiceFacts, StoreError> {
    let counters = store::every_counter(tx)?
        .into_iter()
        .map(|c| StockCounters {
            site: c.site,
            product_id: c.product_id,
            added: c.added,
            removed: c.removed,
            version: c.version,
        })
        .collect();
    let lines = store::every_line(tx)?
        .into_iter()
        .map(|l| LineFact {
            order_id: l.order_id,
            product_id: l.product_id,
            site: l.site,
            quantity: l.quantity,
            status: l.status,
            version: l.version,
        })
        .collect();
    Ok(ServiceFacts::Inventory { site, counters, lines })
}
