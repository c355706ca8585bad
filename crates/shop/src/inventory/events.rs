//! What inventory publishes: its answer to each placed order (key: order id) and the stock
//! adjustment counters of a product after every change at a site (key: product id,
//! state-carrying). The other site replicates both.

use kit::envelope::NewEvent;

use super::merge::SiteStock;
use super::model::{ReservationLine, Stock};
use crate::contracts::inventory as contract;

pub use contract::{
    KINDS, RESERVATION_KINDS, Reservation, SCOPE, STOCK_ADJUSTED, STOCK_REJECTED, STOCK_RELEASED,
    STOCK_RESERVED, StockCounters, StockLine, reservation_event,
};

/// The event announcing the reservation lines `lines` (one order, one status).
pub fn reservation_of(lines: &[ReservationLine], reason: Option<String>) -> Reservation {
    let first = lines.first().expect("an order has at least one line");
    Reservation {
        order_id: first.order_id.clone(),
        lines: lines
            .iter()
            .map(|l| StockLine { product_id: l.product_id.clone(), quantity: l.quantity })
            .collect(),
        reason,
        site: Some(first.site),
        status: Some(first.status),
        placed_at_ms: first.placed_at_ms,
        compensated: false,
    }
}

/// The lines `reservation` replicates, at `version`; none for an answer that reserved nothing.
pub fn replicated(reservation: &Reservation, version: u64) -> Vec<ReservationLine> {
    let (Some(site), Some(status)) = (reservation.site, reservation.status) else { return Vec::new() };
    reservation
        .lines
        .iter()
        .map(|l| ReservationLine {
            order_id: reservation.order_id.clone(),
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            status,
            site,
            placed_at_ms: reservation.placed_at_ms,
            version,
        })
        .collect()
}

impl From<&SiteStock> for StockCounters {
    fn from(s: &SiteStock) -> Self {
        Self {
            site: s.site,
            product_id: s.product_id.clone(),
            added: s.added,
            removed: s.removed,
            version: s.version,
        }
    }
}

impl From<StockCounters> for SiteStock {
    fn from(c: StockCounters) -> Self {
        Self {
            site: c.site,
            product_id: c.product_id,
            added: c.added,
            removed: c.removed,
            version: c.version,
        }
    }
}

/// StockAdjusted: one site's adjustment counters of a product (key: product id, version:
/// the counters' version at that site).
pub fn level_event(counters: &SiteStock) -> NewEvent {
    contract::counters_event(&counters.into())
}

/// The token a stock write answers with: the product at its view version.
pub fn token(stock: &Stock) -> kit::token::ConsistencyToken {
    contract::token(&stock.product_id, stock.version)
}

/// How inventory applies what it consumes.
pub mod apply {
    use std::sync::Arc;

    use kit::consumer::{Handler, HandlerError};
    use kit::envelope::Envelope;
    use kit::outbox::Outbox;
    use kit::store::Tx;
    use tokio::sync::Notify;

    use super::{Reservation, STOCK_ADJUSTED, STOCK_REJECTED, STOCK_RELEASED, STOCK_RESERVED};
    use crate::contracts::order::{self as order, Order};
    use crate::inventory::merge::SiteStock;
    use crate::inventory::model::Answer;
    use crate::inventory::sites::{Mode, Site};
    use crate::inventory::store;

    /// Answers each placed order routed to this site with a reservation (or a rejection), and
    /// releases the stock of a cancelled one. Served per key, so the events of one order
    /// arrive in order; orders routed to the other site are left to it.
    pub struct OrderAnswers {
        pub outbox: Outbox,
        pub site: Site,
        pub mode: Mode,
        /// Wakes the site's [`crate::inventory::agreement`] task after a reservation commits.
        pub agreement: Arc<Notify>,
    }

    impl Handler for OrderAnswers {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if ![order::ORDER_PLACED, order::ORDER_CANCELLED].contains(&event.kind.as_str()) {
                return Ok(());
            }
            let order: Order = event.keyed_payload(|o: &Order| &o.id)?;
            if Site::of_customer(&order.customer_id) != self.site {
                return Ok(());
            }
            if event.kind == order::ORDER_PLACED {
                let lines = order.lines.into_iter().map(|l| (l.product_id, l.quantity));
                let answer = store::reserve(tx, &self.outbox, self.site, self.mode, &order.id, lines, event)?;
                if answer == Some(Answer::Waiting) {
                    let agreement = self.agreement.clone();
                    tx.after_commit(move || agreement.notify_one());
                }
                tracing::info!(site = %self.site, order = %order.id, answer = answer.map(|a| a.as_str()), "placed order answered");
            } else {
                let released = store::release(tx, &self.outbox, &order.id, order.reason, event)?;
                tracing::info!(site = %self.site, order = %order.id, lines = released.len(), "cancelled order released");
            }
            Ok(())
        }
    }

    /// Replicates the other site's reservation lines and adjustment counters, each row
    /// replaced only by a newer version: any order of delivery, and any repetition, ends in
    /// the same view (DESIGN §2). Then wakes this site's agreement task.
    pub struct SiteReplica {
        pub agreement: Arc<Notify>,
    }

    impl Handler for SiteReplica {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            let permanent = |e: String| HandlerError::permanent(e);
            let from = event.stream.as_str();
            let changed = match event.kind.as_str() {
                STOCK_ADJUSTED => {
                    let counters: SiteStock = event
                        .payload_as::<super::StockCounters>()
                        .map_err(|e| permanent(e.to_string()))?
                        .into();
                    if counters.site.instance() != from || counters.product_id != event.key {
                        return Err(permanent(format!(
                            "StockAdjusted {} on {from} is about {} at {}",
                            event.id, counters.product_id, counters.site
                        )));
                    }
                    store::apply_counters(tx, &counters)?
                }
                STOCK_RESERVED | STOCK_REJECTED | STOCK_RELEASED => {
                    let reservation: Reservation =
                        event.payload_as().map_err(|e| permanent(e.to_string()))?;
                    if reservation.site.is_some_and(|s| s.instance() != from)
                        || reservation.order_id != event.key
                    {
                        return Err(permanent(format!(
                            "{} {} on {from} is about order {} at {:?}",
                            event.kind, event.id, reservation.order_id, reservation.site
                        )));
                    }
                    let mut changed = false;
                    for line in super::replicated(&reservation, event.version) {
                        changed |= store::apply_line(tx, &line)?;
                    }
                    changed
                }
                _ => false,
            };
            if changed {
                let agreement = self.agreement.clone();
                tx.after_commit(move || agreement.notify_one());
            }
            Ok(())
        }
    }
}
