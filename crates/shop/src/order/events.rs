//! What the order service publishes ([`crate::contracts::order`]: the whole order at its
//! new version), and how it applies what it consumes.

use kit::envelope::NewEvent;
use kit::token::{ConsistencyToken, TokenEntry};

use super::model::Order;
use crate::contracts::order as contract;

pub use contract::{
    AddressSource, KINDS, ORDER_ADDRESS_CONFIRMED, ORDER_ADDRESS_OVERRIDDEN, ORDER_CANCELLED,
    ORDER_CONFIRMED, ORDER_PLACED, ORDER_REJECTED, OrderLine, OrderStatus, SCOPE,
};

/// The event of `kind` carrying `order` as its contract publishes it.
pub fn event(kind: &str, order: &Order) -> NewEvent {
    contract::event(kind, &contract::Order::from(order))
}

/// The token a write of `order` answers with: `order/<id>@<version>`.
pub fn token(order: &Order) -> ConsistencyToken {
    ConsistencyToken::new()
        .with(TokenEntry::new(SCOPE, &order.id, order.version).expect("order ids are token-safe"))
}

/// How the order service applies what it consumes.
pub mod apply {
    use kit::consumer::{Handler, HandlerError};
    use kit::envelope::Envelope;
    use kit::outbox::Outbox;
    use kit::replica::VersionGate;
    use kit::store::Tx;

    use super::{ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_REJECTED, OrderStatus};
    use crate::contracts::catalog::{self, Product};
    use crate::contracts::customer::{self, Customer};
    use crate::contracts::inventory::{self, Reservation};
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
    /// inventory site it was routed to (a provisional reservation is not an answer yet). A
    /// compensation — an accepted reservation given back because its product was oversold, or a
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
            if reservation.status.is_some_and(|s| !s.answers()) {
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
