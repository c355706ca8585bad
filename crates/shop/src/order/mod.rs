//! The order service: carts, the checkout and orders. It keeps version-gated replicas of
//! customers (address, payment method) and products (names, list prices), so a checkout
//! works while the customer service is down; the total and the payment are synchronous.

pub mod checkout;
pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod place;
pub mod placing;
pub mod store;

use std::sync::Arc;

use kit::bus::{ConsumerSpec, Ordering};
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Consumers, Context, Service, ServiceName};
use events::apply::{CustomerReplica, ProductReplica, StockAnswers};

pub struct OrderService;

impl Service for OrderService {
    const NAME: ServiceName = ServiceName::Order;

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
        // Replicas are state-carrying and version-gated: no ordering, no parking.
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("customer-replica"), &["customer"]),
            CustomerReplica { gate: ctx.gate.clone() },
        );
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("product-replica"), &["catalog"]),
            ProductReplica { gate: ctx.gate.clone() },
        );
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("stock"), &["inventory-dc1", "inventory-dc2"])
                .ordering(Ordering::PerKey),
            StockAnswers { outbox: ctx.outbox.clone() },
        );
        // Placements that outlive their bound are abandoned and voided at payment.
        let shutdown = consumers.shutdown();
        consumers.spawn(placing::abandon_every(ctx.clone(), shutdown));
    }
}

#[cfg(test)]
mod tests;
