//! The payment service: the source of truth for payment authorizations. The order service
//! asks it synchronously before placing an order (consistent: no answer, no order); each
//! decision is made once per order and published for shipping to replicate.

pub mod events;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;

use kit::store::Migrations;
use utoipa::OpenApi;

use crate::service::{Context, Service, ServiceName};

pub struct PaymentService;

const MIGRATIONS: Migrations = Migrations {
    component: "payment",
    sqlite: &[include_str!("../../migrations/sqlite/payment.sql")],
    postgres: &[include_str!("../../migrations/postgres/payment.sql")],
};

impl Service for PaymentService {
    const NAME: ServiceName = ServiceName::Payment;

    fn migrations() -> &'static Migrations {
        &MIGRATIONS
    }

    fn router(ctx: Arc<Context>) -> axum::Router {
        http::router(ctx)
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        http::Api::openapi()
    }
}

#[cfg(test)]
mod tests;
