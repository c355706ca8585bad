//! Rule 5, judged on the inventory sites' own databases (the embedded mode's files once
//! the shop is down; the distributed mode's PostgreSQL databases once it has settled):
//! cp never oversells; in ap every oversell is compensated, and nothing oversold stands
//! reserved.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use kit::store::Store;
use shop::inventory::audit::Audit;
use shop::inventory::sites::{Mode, Site};
use shop::launch::StoreLocation;

use super::check::Rule;
use super::child::ChildShop;

/// Audits the sites of `shop` and stops it: the SQLite files of the embedded mode once it
/// is down (they are its own while it runs), PostgreSQL's databases before.
pub async fn audit_of(shop: &mut ChildShop, data_dir: &Path) -> anyhow::Result<Audit> {
    if !shop.distributed() {
        shop.kill().await;
        return audit(&StoreLocation::Sqlite, data_dir).await;
    }
    let base_url = shop.processes()?.postgres_base().context("capshop up printed no PostgreSQL")?;
    let audited = audit(&StoreLocation::Postgres { base_url }, data_dir).await;
    shop.stop().await;
    audited
}

/// Reads both sites' and shipping's databases at `location` (SQLite files in `data_dir`:
/// the shop must be stopped; PostgreSQL: read while it runs, settled).
pub async fn audit(location: &StoreLocation, data_dir: &Path) -> anyhow::Result<Audit> {
    let mut stores = Vec::new();
    for part in ["inventory-dc1", "inventory-dc2", "shipping"] {
        stores.push(Store::open(&location.url_of(part, data_dir), &[]).await?);
    }
    let shipping = stores.pop().expect("three stores");
    let sites =
        BTreeMap::from([(Site::Dc2, stores.pop().expect("dc2")), (Site::Dc1, stores.pop().expect("dc1"))]);
    Ok(Audit::measure(&sites, &shipping).await?)
}

/// Judges `audit` by the mode's promise.
pub fn rule(mode: Mode, audit: &Audit) -> Rule {
    let mut rule = Rule::new("5 cp never oversells, ap compensates");
    match mode {
        Mode::Cp => rule.judge(audit.oversold_units == 0, || {
            format!(
                "cp oversold {} units (reserved beyond stock: {})",
                audit.oversold_units, audit.reserved_beyond_stock
            )
        }),
        Mode::Ap => rule.judge(audit.oversold_unshipped_uncompensated == 0, || {
            format!(
                "ap left {} oversold orders uncompensated ({} units oversold, {} compensated)",
                audit.oversold_unshipped_uncompensated, audit.oversold_units, audit.compensated_orders
            )
        }),
    }
    rule.judge(audit.reserved_beyond_stock == 0, || {
        format!("{} units stand reserved beyond the stock after the heal", audit.reserved_beyond_stock)
    });
    rule.judge(audit.divergence == 0, || format!("the sites' views differ on {} rows", audit.divergence));
    rule
}
