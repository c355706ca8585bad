//! What inventory publishes: its answer to each placed order (key: order id) and the stock
//! level of a product after every change (key: product id, state-carrying).

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

pub const STOCK_RESERVED: &str = "StockReserved";
pub const STOCK_REJECTED: &str = "StockRejected";
pub const STOCK_RELEASED: &str = "StockReleased";
pub const STOCK_ADJUSTED: &str = "StockAdjusted";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLine {
    pub product_id: String,
    pub quantity: u32,
}

/// Payload of StockReserved, StockRejected (with `reason`) and StockReleased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reservation {
    pub order_id: String,
    pub lines: Vec<StockLine>,
    pub reason: Option<String>,
}

/// Payload of StockAdjusted: a product's stock after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLevel {
    pub product_id: String,
    pub on_hand: u64,
    pub reserved: u64,
    pub version: u64,
}

pub fn reservation_event(kind: &str, reservation: &Reservation) -> NewEvent {
    NewEvent::new(kind, reservation.order_id.as_str(), 1, reservation)
}

pub fn level_event(level: &StockLevel) -> NewEvent {
    NewEvent::new(STOCK_ADJUSTED, level.product_id.as_str(), level.version, level)
}

/// The scope of a product's stock in consistency tokens: `stock/<product id>@<version>`.
pub const SCOPE: &str = "stock";

/// The token a stock write answers with.
pub fn token(level: &StockLevel) -> kit::token::ConsistencyToken {
    let entry = kit::token::TokenEntry::new(SCOPE, &level.product_id, level.version)
        .expect("product ids are token-safe");
    kit::token::ConsistencyToken::new().with(entry)
}

/// How inventory applies what it consumes.
pub mod apply {
    use kit::consumer::{Handler, HandlerError};
    use kit::envelope::Envelope;
    use kit::outbox::Outbox;
    use kit::store::Tx;

    use crate::inventory::store;
    use crate::order::events::{self as order, Order};

    /// Answers each placed order with a reservation or a rejection, and releases the stock
    /// of a cancelled one. Served per key, so the events of one order arrive in order.
    pub struct OrderAnswers {
        pub outbox: Outbox,
    }

    impl Handler for OrderAnswers {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if ![order::ORDER_PLACED, order::ORDER_CANCELLED].contains(&event.kind.as_str()) {
                return Ok(());
            }
            let order: Order = event.payload_as().map_err(|e| HandlerError::permanent(e.to_string()))?;
            if event.key != order.id {
                return Err(HandlerError::permanent(format!(
                    "{} {} has key {:?} but its payload is about order {:?}",
                    event.kind, event.id, event.key, order.id
                )));
            }
            if event.kind == order::ORDER_PLACED {
                let lines = order.lines.into_iter().map(|l| (l.product_id, l.quantity));
                let answer = store::reserve(tx, &self.outbox, &order.id, lines, event)?;
                tracing::info!(order = %order.id, answer = answer.map(|a| a.as_str()), "placed order answered");
            } else {
                let released = store::release(tx, &self.outbox, &order.id, order.reason, event)?;
                tracing::info!(order = %order.id, lines = released.len(), "cancelled order released");
            }
            Ok(())
        }
    }
}
