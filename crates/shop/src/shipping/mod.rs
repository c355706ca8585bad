//! The shipping service: the source of truth for shipments. It keeps version-gated
//! replicas of orders and of customers' current addresses, and each order's payment
//! decision; after every event it decides the affected shipments in the same transaction.
//!
//! An order ships only when it is confirmed, paid, and its address equals the customer's
//! current address as shipping knows it, or the customer confirmed the difference
//! (DESIGN §6: nothing is shipped to an address that disagrees with the customer's current
//! one). Until then its shipment is held with the reason, and released when the facts
//! agree. A shipped shipment is final. A rejected or cancelled order never ships: it gets
//! no shipment, or its held one is closed with a last ShipmentHeld saying so.

pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;

use kit::bus::{ConsumerSpec, Ordering};
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Consumers, Context, Service, ServiceName};
use events::apply::{CustomerReplica, OrderReplica, Payments};

pub struct ShippingService;

impl Service for ShippingService {
    const NAME: ServiceName = ServiceName::Shipping;

    fn facts(
        tx: &mut kit::store::Tx<'_>,
        _: Option<crate::contracts::inventory::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, kit::store::StoreError> {
        facts::read(tx)
    }

    fn routes(_: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
        http::routes()
    }

    fn consume(ctx: &Arc<Context>, consumers: &mut Consumers) {
        // Sign-in checked here, with no call to the customer service.
        crate::service::session::replicate(ctx, consumers);
        // State-carrying and version-gated (payments: recorded idempotently), so no
        // ordering and no parking: a later version is safe to apply past a dead letter.
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("order-replica"), &["order"]).ordering(Ordering::Unordered),
            OrderReplica { gate: ctx.gate.clone(), outbox: ctx.outbox.clone() },
        );
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("customer-replica"), &["customer"])
                .ordering(Ordering::Unordered),
            CustomerReplica { gate: ctx.gate.clone(), outbox: ctx.outbox.clone() },
        );
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("payments"), &["payment"]).ordering(Ordering::Unordered),
            Payments { outbox: ctx.outbox.clone() },
        );
    }
}

#[cfg(test)]
mod tests;
