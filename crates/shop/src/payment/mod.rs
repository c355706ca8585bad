//! The payment service: the source of truth for payment authorizations. The order service
//! asks it synchronously before placing an order (consistent: no answer, no order); each
//! decision is made once per order and published for shipping to replicate.

pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Context, Service, ServiceName};

pub struct PaymentService;

impl Service for PaymentService {
    const NAME: ServiceName = ServiceName::Payment;

    fn facts(
        tx: &mut kit::store::Tx<'_>,
        _: Option<crate::contracts::inventory::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, kit::store::StoreError> {
        facts::read(tx)
    }

    fn routes(_: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
        http::routes()
    }
}

#[cfg(test)]
mod tests;
