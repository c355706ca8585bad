//! How two sites count one stock so that merging is commutative, and the rule that picks
//! which reservations an oversold product gives back.
//!
//! Each site writes only its own rows: its adjustment counters per product (units added,
//! units removed; both only grow) and the reservation lines of the orders routed to it.
//! The other site keeps copies, replaced only by a newer version of the same row. A view is
//! a sum over rows, so it does not depend on the order in which copies arrived, nor on how
//! often: on hand = Σ (added − removed) over both sites, reserved = Σ unreleased lines.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::model::{ReservationLine, ReservationStatus};
use super::sites::Site;

/// One site's adjustment counters of a product (the payload of StockAdjusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteStock {
    pub site: Site,
    #[schema(value_type = crate::contracts::ids::ProductId)]
    pub product_id: String,
    /// Units this site ever added to the product's stock.
    pub added: u64,
    /// Units this site ever took away from it.
    pub removed: u64,
    pub version: u64,
}

/// On hand in a view: the sum of both sites' counters (never below zero).
pub fn on_hand(counters: &[SiteStock]) -> u64 {
    let added: u64 = counters.iter().map(|c| c.added).sum();
    let removed: u64 = counters.iter().map(|c| c.removed).sum();
    added.saturating_sub(removed)
}

/// Units reserved in a view: every line not released, at either site.
pub fn reserved(lines: &[ReservationLine]) -> u64 {
    lines.iter().filter(|l| l.status.counts_against_stock()).map(|l| u64::from(l.quantity)).sum()
}

/// The orders whose lines of one product do not fit `on_hand`. Final (`reserved`) lines
/// are taken first (they may have shipped), then by the time the order was placed and its id — the
/// same order at both sites — and every line from the first that does not fit on is out:
/// the latest placed orders give their units back.
pub fn over(on_hand: u64, lines: &[ReservationLine]) -> BTreeSet<String> {
    let mut counted: Vec<&ReservationLine> =
        lines.iter().filter(|l| l.status.counts_against_stock()).collect();
    counted.sort_by(|a, b| {
        let waiting = |l: &ReservationLine| l.status != ReservationStatus::Reserved;
        (waiting(a), a.placed_at_ms, &a.order_id).cmp(&(waiting(b), b.placed_at_ms, &b.order_id))
    });
    let mut used = 0u64;
    let mut out = BTreeSet::new();
    for line in counted {
        if out.is_empty() && used + u64::from(line.quantity) <= on_hand {
            used += u64::from(line.quantity);
        } else {
            out.insert(line.order_id.clone());
        }
    }
    out
}

/// The orders to give back over several products: `views` maps a product to its on hand
/// and its lines; an order out for one product is out as a whole.
pub fn compensated(views: &BTreeMap<String, (u64, Vec<ReservationLine>)>) -> BTreeSet<String> {
    views.values().flat_map(|(on_hand, lines)| over(*on_hand, lines)).collect()
}

/// The apology an order compensated for `product_id` is cancelled with.
pub fn apology(product_id: &str) -> String {
    format!(
        "sorry: {product_id} was oversold while the inventory sites dc1 and dc2 could not see each \
         other, and this order was among the latest placed, so it is cancelled"
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    fn line(order: &str, quantity: u32, status: ReservationStatus, placed_at_ms: u64) -> ReservationLine {
        ReservationLine {
            order_id: order.into(),
            product_id: "p-001".into(),
            quantity,
            status,
            site: Site::Dc1,
            placed_at_ms,
            version: 1,
        }
    }

    use ReservationStatus::{Provisional, Released, Reserved};

    #[test]
    fn the_latest_placed_orders_give_back_what_does_not_fit() {
        let lines = [
            line("o-c", 2, Provisional, 30),
            line("o-a", 2, Provisional, 10),
            line("o-b", 2, Provisional, 20),
            line("o-d", 1, Provisional, 40),
        ];
        assert_eq!(over(5, &lines), BTreeSet::from(["o-c".into(), "o-d".into()]));
        assert!(over(7, &lines).is_empty());
    }

    #[test]
    fn final_lines_keep_their_units_before_earlier_provisional_ones() {
        let lines = [line("o-early", 2, Provisional, 10), line("o-shipped", 2, Reserved, 50)];
        assert_eq!(over(2, &lines), BTreeSet::from(["o-early".into()]));
    }

    #[test]
    fn released_lines_count_for_nothing_and_equal_times_are_ordered_by_order_id() {
        let lines =
            [line("o-b", 1, Provisional, 10), line("o-a", 1, Provisional, 10), line("o-z", 5, Released, 1)];
        assert_eq!(over(1, &lines), BTreeSet::from(["o-b".into()]));
        assert_eq!(reserved(&lines), 2);
    }

    #[test]
    fn the_rule_does_not_depend_on_the_order_lines_are_listed_in() {
        let mut lines = vec![
            line("o-a", 3, Provisional, 10),
            line("o-b", 1, Reserved, 20),
            line("o-c", 2, Provisional, 5),
            line("o-d", 2, Provisional, 15),
        ];
        let expected = over(4, &lines);
        lines.reverse();
        assert_eq!(over(4, &lines), expected);
        lines.swap(0, 2);
        assert_eq!(over(4, &lines), expected);
    }

    #[test]
    fn on_hand_is_the_sum_of_both_sites_counters() {
        let counters = [
            SiteStock { site: Site::Dc1, product_id: "p-001".into(), added: 10, removed: 3, version: 2 },
            SiteStock { site: Site::Dc2, product_id: "p-001".into(), added: 4, removed: 0, version: 1 },
        ];
        assert_eq!(on_hand(&counters), 11);
    }
}
