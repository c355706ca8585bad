//! The order service's contract: every event carries the whole order at its new version
//! (key: order id), so shipping and search replicate it with the version gate.

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

use super::customer::Address;

pub const ORDER_PLACED: &str = "OrderPlaced";
pub const ORDER_ADDRESS_OVERRIDDEN: &str = "OrderAddressOverridden";
pub const ORDER_CONFIRMED: &str = "OrderConfirmed";
pub const ORDER_REJECTED: &str = "OrderRejected";
pub const ORDER_CANCELLED: &str = "OrderCancelled";

/// The reason of an order its customer cancelled (any other reason of a cancelled order is
/// an inventory site's apology for stock it could not keep).
pub const CANCELLED_BY_THE_CUSTOMER: &str = "cancelled by the customer";
/// The customer confirmed that the order's address is right although it differs from
/// the address on file: shipping may ship to it.
pub const ORDER_ADDRESS_CONFIRMED: &str = "OrderAddressConfirmed";
pub const KINDS: [&str; 6] = [
    ORDER_PLACED,
    ORDER_ADDRESS_OVERRIDDEN,
    ORDER_CONFIRMED,
    ORDER_REJECTED,
    ORDER_CANCELLED,
    ORDER_ADDRESS_CONFIRMED,
];

/// The schema version of the [`Order`] payload.
pub const SCHEMA: u32 = 1;

/// The scope of order aggregates in replica versions.
pub const SCOPE: &str = "order";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed and paid; waiting for inventory's answer.
    PendingStock,
    /// Stock reserved.
    Confirmed,
    /// Inventory could not reserve the stock.
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingStock => "pending_stock",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::PendingStock, Self::Confirmed, Self::Rejected, Self::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Where the address of an order (or a checkout) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AddressSource {
    /// The order service's replica of the customer.
    Replica,
    /// Asked from the customer service synchronously.
    Owner,
    /// Given by the shopper at checkout.
    Override,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub product_id: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_cents: u64,
}

/// An order as the order service publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: u64,
    /// Where the order ships to.
    pub address: Address,
    pub address_source: AddressSource,
    /// True once the customer confirmed this address although it differs from theirs.
    pub address_confirmed: bool,
    pub payment_authorization_id: String,
    /// Why the order was rejected or cancelled.
    pub reason: Option<String>,
    pub version: u64,
}

pub fn event(kind: &str, order: &Order) -> NewEvent {
    NewEvent::new(kind, order.id.as_str(), order.version, order).schema(SCHEMA)
}
