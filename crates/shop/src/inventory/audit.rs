//! The figures of scenario 6, read from both sites' databases (and shipping's, for what
//! shipped): what each site accepted and refused, how much was oversold before it was
//! compensated, and whether the two views agree.

use std::collections::{BTreeMap, BTreeSet};

use kit::store::{Store, StoreError};
use serde::Serialize;

use super::merge::{self, SiteStock};
use super::model::{Answer, ReservationLine, ReservationStatus};
use super::sites::Site;

/// What one site did with the orders routed to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SiteFigures {
    /// Orders it reserved stock for (whatever became of them later).
    pub accepted: u64,
    /// Orders it refused because it could not reach the other site (cp).
    pub refused_unreachable: u64,
    /// Orders it refused because its view had too little stock.
    pub refused_short: u64,
    /// Its reservations that still wait to be acknowledged (cp) or arbitrated (ap).
    pub waiting: u64,
    /// Orders it compensated after the rule found them oversold (ap).
    pub compensated: u64,
    /// Units reserved beyond on hand in its view right now (cp: always 0).
    pub oversold_in_view: u64,
}

/// Scenario 6 in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub sites: BTreeMap<Site, SiteFigures>,
    /// Units accepted beyond the stock, summed over products, counting compensated
    /// reservations as they were before compensation. Measured on each site's own rows, so it
    /// shows an oversell during a partition that neither site can see yet.
    pub oversold_units: u64,
    /// Orders compensated with an apology.
    pub compensated_orders: u64,
    /// Compensated orders that shipped anyway (could not be stopped; 0 by design).
    pub oversold_shipped: u64,
    /// Orders the rule finds oversold whose reservations still stand uncompensated (0 once
    /// the sites have seen each other and the arbiter has decided).
    pub oversold_uncompensated: u64,
    /// Of those, the ones not shipped: scenario 6's `ap_oversold_unshipped_after_compensation`.
    pub oversold_unshipped_uncompensated: u64,
    /// Units in final (`reserved`) reservations beyond the stock: oversell that may ship.
    /// Never above 0 in cp.
    pub reserved_beyond_stock: u64,
    /// Rows (counters and reservation lines) on which the two sites' views differ.
    pub divergence: u64,
}

struct SiteRows {
    counters: Vec<SiteStock>,
    lines: Vec<ReservationLine>,
    answers: Vec<(String, Answer, Option<String>)>,
}

async fn read(store: &Store) -> Result<SiteRows, StoreError> {
    store
        .transact(|tx| {
            let mut counters = Vec::new();
            let mut lines = Vec::new();
            let products: Vec<String> = tx
                .query("SELECT DISTINCT product_id FROM site_stock ORDER BY product_id", &[])?
                .into_iter()
                .map(|r| r.get(0))
                .collect::<Result<_, _>>()?;
            for product_id in &products {
                counters.extend(super::store::counters(tx, product_id)?);
                lines.extend(super::store::product_lines(tx, product_id)?);
            }
            let answers = tx
                .query("SELECT order_id, answer, reason FROM stock_answer ORDER BY order_id", &[])?
                .into_iter()
                .map(|mut r| {
                    let text: String = r.take(1)?;
                    let answer = Answer::parse(&text)
                        .ok_or_else(|| StoreError::Database(format!("unknown stock answer {text:?}")))?;
                    Ok((r.take(0)?, answer, r.take(2)?))
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(SiteRows { counters, lines, answers })
        })
        .await
}

fn by_product(rows: &SiteRows) -> BTreeMap<&str, (u64, Vec<ReservationLine>)> {
    let mut views: BTreeMap<&str, (u64, Vec<ReservationLine>)> = BTreeMap::new();
    for c in &rows.counters {
        let counters: Vec<SiteStock> =
            rows.counters.iter().filter(|x| x.product_id == c.product_id).cloned().collect();
        views.entry(c.product_id.as_str()).or_default().0 = merge::on_hand(&counters);
    }
    for l in &rows.lines {
        views.entry(l.product_id.as_str()).or_default().1.push(l.clone());
    }
    views
}

impl Audit {
    /// Measures both sites (`sites` maps each to its store) and what `shipping` shipped.
    pub async fn measure(sites: &BTreeMap<Site, Store>, shipping: &Store) -> Result<Audit, StoreError> {
        let mut rows = BTreeMap::new();
        for (site, store) in sites {
            rows.insert(*site, read(store).await?);
        }
        let shipped: BTreeSet<String> = shipping
            .transact(|tx| {
                tx.query("SELECT order_id FROM shipment WHERE status = 'shipped'", &[])?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect()
            })
            .await?;
        let mut audit = Audit::default();
        let mut compensated = BTreeSet::new();
        for (site, r) in &rows {
            let own: BTreeSet<&str> =
                r.lines.iter().filter(|l| l.site == *site).map(|l| l.order_id.as_str()).collect();
            let mut f = SiteFigures::default();
            for (order_id, answer, reason) in &r.answers {
                let unreachable = reason.as_deref().is_some_and(|r| r.contains("cannot reach"));
                match answer {
                    Answer::Rejected if unreachable => f.refused_unreachable += 1,
                    Answer::Rejected => f.refused_short += 1,
                    Answer::Waiting => f.waiting += 1,
                    Answer::Compensated => {
                        f.compensated += 1;
                        compensated.insert(order_id.clone());
                    }
                    Answer::Reserved | Answer::Cancelled => {}
                }
                let reserved = own.contains(order_id.as_str());
                if reserved && *answer != Answer::Rejected {
                    f.accepted += 1;
                }
            }
            f.oversold_in_view = by_product(r)
                .values()
                .map(|(on_hand, lines)| merge::reserved(lines).saturating_sub(*on_hand))
                .sum();
            audit.sites.insert(*site, f);
        }
        audit.compensated_orders = compensated.len() as u64;
        audit.oversold_shipped = compensated.intersection(&shipped).count() as u64;
        // The truth: each site's own rows, read from its own database.
        let truth = SiteRows {
            counters: rows
                .iter()
                .flat_map(|(s, r)| r.counters.iter().filter(|c| c.site == *s).cloned())
                .collect(),
            lines: rows.iter().flat_map(|(s, r)| r.lines.iter().filter(|l| l.site == *s).cloned()).collect(),
            answers: Vec::new(),
        };
        for (on_hand, lines) in by_product(&truth).into_values() {
            let accepted: u64 = lines
                .iter()
                .filter(|l| l.status.counts_against_stock() || compensated.contains(&l.order_id))
                .map(|l| u64::from(l.quantity))
                .sum();
            audit.oversold_units += accepted.saturating_sub(on_hand);
            let reserved: u64 = lines
                .iter()
                .filter(|l| l.status == ReservationStatus::Reserved)
                .map(|l| u64::from(l.quantity))
                .sum();
            audit.reserved_beyond_stock += reserved.saturating_sub(on_hand);
            let over = merge::over(on_hand, &lines);
            audit.oversold_uncompensated += over.len() as u64;
            audit.oversold_unshipped_uncompensated += over.difference(&shipped).count() as u64;
        }
        let views: Vec<(BTreeSet<String>, BTreeSet<String>)> = rows
            .values()
            .map(|r| {
                let counters = r.counters.iter().map(|c| format!("{c:?}")).collect();
                let lines = r.lines.iter().map(|l| format!("{l:?}")).collect();
                (counters, lines)
            })
            .collect();
        if let [a, b] = views.as_slice() {
            audit.divergence =
                (a.0.symmetric_difference(&b.0).count() + a.1.symmetric_difference(&b.1).count()) as u64;
        }
        Ok(audit)
    }
}
