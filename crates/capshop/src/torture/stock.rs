//! Rule 5, judged on the inventory sites' own databases (the embedded mode's files once
//! the shop is down; the distributed mode's PostgreSQL databases once it has settled):
//! cp never oversells; in ap every oversell is compensated, and nothing oversold stands
//! reserved. In cp also on every view of the stock a client read during the run.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use kit::store::Store;
use shop::inventory::audit::Audit;
use shop::inventory::sites::{Mode, Site};
use shop::launch::StoreLocation;

use super::check::Rule;
use super::child::ChildShop;
use super::history::{Op, Outcome};

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

/// Judges `audit`, and in cp every view of the stock a client read in `ops`, by the mode's
/// promise.
pub fn rule(mode: Mode, audit: &Audit, ops: &[Op]) -> Rule {
    let mut rule = Rule::new("5 cp never oversells, ap compensates");
    match mode {
        Mode::Cp => {
            rule.judge(audit.oversold_units == 0, || {
                format!(
                    "cp oversold {} units (reserved beyond stock: {})",
                    audit.oversold_units, audit.reserved_beyond_stock
                )
            });
            views_never_oversold(&mut rule, ops);
        }
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

/// cp: each site's view holds every reservation that committed anywhere, so it never shows
/// more reserved than on hand, at any moment; a later restock that covers an oversell in
/// the final stock does not cover it here. Judged once per site and product a client read,
/// by its first read that showed any.
fn views_never_oversold(rule: &mut Rule, ops: &[Op]) {
    let oversold = |read: &Op| read.ids["oversold"].as_u64().unwrap_or(0);
    let mut views: BTreeMap<&str, Option<&Op>> = BTreeMap::new();
    for read in ops.iter().filter(|op| op.op == "read-stock" && op.outcome == Outcome::Ok) {
        let first = views.entry(read.key.as_str()).or_default();
        if first.is_none() && oversold(read) > 0 {
            *first = Some(read);
        }
    }
    for (view, read) in views {
        let shown = read.map(|read| {
            format!(
                "cp: {view} showed {} units reserved beyond on hand at {:.2}s",
                oversold(read),
                read.complete
            )
        });
        rule.judge(shown.is_none(), || shown.unwrap_or_default());
    }
}
