//! Counters against what they count: search's bestsellers (units of each product in every
//! order placed) against the lines of the order service's orders. A counter keeps no row
//! per event, so a redelivery its consumer's inbox let through shows only here.

use std::collections::{BTreeMap, BTreeSet};

use super::view::View;
use super::{Finding, Group};

/// Per product, the units search counts against the units of the orders' lines.
pub fn check(view: &View<'_>) -> Vec<Finding> {
    // Without both parts there is nothing to compare; `missing_parts` reports the absent one.
    // A counter that began after orders were placed (an upgraded shop) never counted them.
    if !(view.parts.contains_key("order") && view.parts.contains_key("search") && view.counted_from_the_start)
    {
        return Vec::new();
    }
    let mut placed: BTreeMap<&str, u64> = BTreeMap::new();
    for line in view.orders.values().flat_map(|order| &order.lines) {
        *placed.entry(line.product_id.as_str()).or_default() += u64::from(line.quantity);
    }
    let products: BTreeSet<&str> = placed.keys().chain(view.units_ordered.keys()).copied().collect();
    let via = [("order", "search.orders")];
    products
        .into_iter()
        .filter_map(|product| {
            let counted = view.units_ordered.get(product).copied().unwrap_or(0);
            let ordered = placed.get(product).copied().unwrap_or(0);
            if counted == ordered {
                return None;
            }
            // Too few: an OrderPlaced not applied yet explains it. Too many: no unapplied
            // event takes units away; only a live read that met search after the order
            // service (and the orders placed in between) does.
            let in_flight = if counted < ordered || view.live { view.explain(&via) } else { None };
            let detail =
                format!("search counts {counted} units of {product} ordered, the orders hold {ordered}");
            Some(Finding::new(
                "units_ordered_differ",
                Group::Counter,
                &[("product", product)],
                detail,
                in_flight,
            ))
        })
        .collect()
}
