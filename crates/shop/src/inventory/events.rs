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
