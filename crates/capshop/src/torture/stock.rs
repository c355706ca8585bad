//! Rule 5, judged on the inventory sites' own files once the shop is down: cp never
//! oversells; in ap every oversell is compensated, and nothing oversold stands reserved.

use std::collections::BTreeMap;
use std::path::Path;

use kit::store::Store;
use shop::inventory::audit::Audit;
use shop::inventory::sites::{Mode, Site};
use shop::launch::StoreLocation;

use super::check::Rule;

/// Reads both sites' and shipping's databases in `data_dir` (the shop must be stopped).
pub async fn audit(data_dir: &Path) -> anyhow::Result<Audit> {
    let mut stores = Vec::new();
    for part in ["inventory-dc1", "inventory-dc2", "shipping"] {
        stores.push(Store::open(&StoreLocation::Sqlite.url_of(part, data_dir), &[]).await?);
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
