//! What the order service publishes: every event carries the whole order at its new
//! version (key: order id), so shipping and search replicate it with the version gate.

use kit::envelope::NewEvent;
use serde::{Deserialize, Serialize};

use crate::customer::model::Address;

pub const ORDER_PLACED: &str = "OrderPlaced";
pub const ORDER_ADDRESS_OVERRIDDEN: &str = "OrderAddressOverridden";
pub const ORDER_CONFIRMED: &str = "OrderConfirmed";
pub const ORDER_REJECTED: &str = "OrderRejected";
pub const ORDER_CANCELLED: &str = "OrderCancelled";
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

/// An order as the order service owns it and as its events carry it.
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
    NewEvent::new(kind, order.id.as_str(), order.version, order)
}

/// How the order service applies what it consumes.
pub mod apply {
    use kit::consumer::{Handler, HandlerError};
    use kit::envelope::Envelope;
    use kit::outbox::Outbox;
    use kit::replica::VersionGate;
    use kit::store::Tx;

    use super::{ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_REJECTED, OrderStatus};
    use crate::catalog::events::{self as catalog, Product};
    use crate::customer::events as customer;
    use crate::customer::model::Customer;
    use crate::inventory::events::{self as inventory, Reservation};
    use crate::inventory::model::ReservationStatus;
    use crate::order::model::OrderError;
    use crate::order::store;

    /// Keeps the replica of customers (address, payment method) at their newest version.
    pub struct CustomerReplica {
        pub gate: VersionGate,
    }

    impl Handler for CustomerReplica {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if !customer::KINDS.contains(&event.kind.as_str()) {
                return Ok(());
            }
            let customer: Customer = event.payload_as()?;
            if self.gate.admit(tx, customer::SCOPE, &event.key, event.version)? {
                store::put_customer(tx, &customer, event.occurred_at_ms())?;
            }
            Ok(())
        }
    }

    /// Keeps the replica of product names and list prices at their newest version.
    pub struct ProductReplica {
        pub gate: VersionGate,
    }

    impl Handler for ProductReplica {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if !catalog::KINDS.contains(&event.kind.as_str()) {
                return Ok(());
            }
            let product: Product = event.payload_as()?;
            if self.gate.admit(tx, catalog::SCOPE, &event.key, event.version)? {
                store::put_product(tx, &product.id, &product.name, product.price_cents, product.version)?;
            }
            Ok(())
        }
    }

    /// Moves an order from pending stock to confirmed or rejected on the answer of the
    /// inventory site it was routed to (a provisional hold is not an answer yet). A
    /// compensation — an accepted hold given back because its product was oversold, or a
    /// rejection of a confirmed order — cancels the order with the site's reason (an
    /// apology), so shipping does not ship it if it has not yet.
    pub struct StockAnswers {
        pub outbox: Outbox,
    }

    impl Handler for StockAnswers {
        fn handle(&self, tx: &mut Tx<'_>, event: &Envelope) -> Result<(), HandlerError> {
            if ![inventory::STOCK_RESERVED, inventory::STOCK_REJECTED].contains(&event.kind.as_str()) {
                return Ok(());
            }
            let reservation: Reservation = event.payload_as()?;
            if reservation.status.is_some_and(|s| s != ReservationStatus::Reserved && s.holds()) {
                return Ok(());
            }
            let mut order = match store::order(tx, &reservation.order_id) {
                Ok(order) => order,
                Err(OrderError::NotFound(id)) => {
                    return Err(HandlerError::permanent(format!("no order {id}")));
                }
                Err(e) => return Err(HandlerError::retryable(e.to_string())),
            };
            let (status, kind) = match (event.kind.as_str(), order.status) {
                (inventory::STOCK_RESERVED, OrderStatus::PendingStock) => {
                    (OrderStatus::Confirmed, ORDER_CONFIRMED)
                }
                (inventory::STOCK_REJECTED, OrderStatus::PendingStock) if !reservation.compensated => {
                    (OrderStatus::Rejected, ORDER_REJECTED)
                }
                (inventory::STOCK_REJECTED, OrderStatus::PendingStock) => {
                    (OrderStatus::Cancelled, ORDER_CANCELLED)
                }
                (inventory::STOCK_REJECTED, OrderStatus::Confirmed) => {
                    (OrderStatus::Cancelled, ORDER_CANCELLED)
                }
                _ => return Ok(()),
            };
            order.status = status;
            order.reason = reservation.reason;
            store::change(tx, &self.outbox, order, kind)
                .map_err(|e| HandlerError::retryable(e.to_string()))?;
            Ok(())
        }
    }
}
