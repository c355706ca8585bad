//! What an inventory site tells `capshop reconcile`: both sites' counters and every
//! reservation line as this site holds them (its own rows and its copies of the other's).

use kit::store::{StoreError, Tx};

use super::store;
use crate::contracts::facts::{LineFact, ServiceFacts};
use crate::contracts::inventory::{Site, StockCounters};

/// Reads the facts of `site` in `tx` (the caller's one read transaction).
pub fn read(tx: &mut Tx<'_>, site: Site) -> Result<ServiceFacts, StoreError> {
    let products: Vec<String> = tx
        .query("SELECT DISTINCT product_id FROM site_stock ORDER BY product_id", &[])?
        .into_iter()
        .map(|r| r.get(0))
        .collect::<Result<_, _>>()?;
    let mut counters = Vec::new();
    for product_id in products {
        counters.extend(store::counters(tx, &product_id)?.into_iter().map(|c| StockCounters {
            site: c.site,
            product_id: c.product_id,
            added: c.added,
            removed: c.removed,
            version: c.version,
        }));
    }
    let orders: Vec<String> = tx
        .query("SELECT DISTINCT order_id FROM reservation ORDER BY order_id", &[])?
        .into_iter()
        .map(|r| r.get(0))
        .collect::<Result<_, _>>()?;
    let mut lines = Vec::new();
    for order_id in orders {
        lines.extend(store::order_lines(tx, &order_id)?.into_iter().map(|l| LineFact {
            order_id: l.order_id,
            product_id: l.product_id,
            site: l.site,
            quantity: l.quantity,
            status: l.status,
            version: l.version,
        }));
    }
    Ok(ServiceFacts::Inventory { site, counters, lines })
}
