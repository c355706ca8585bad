//! The inventory service: the source of truth for stock per product and the reservations
//! of placed orders. It answers each OrderPlaced asynchronously (DESIGN §1: "stock
//! reservation: asynchronous, by events") with StockReserved — every line reserved at
//! once — or StockRejected naming what is short, and releases a cancelled order's stock.
//! Every change of a product's stock is announced by StockAdjusted with its new version.
//!
//! An order is answered once: the answer is recorded with the reservation, so a replayed
//! dead letter or a second OrderPlaced of the same order reserves nothing twice. One site
//! for now; the decision is [`model::shortages`] and every stock write is
//! [`store::write_stock`], the two places the dc1/dc2 sites and their `ap`/`cp` modes
//! (scenario 6) will change.

pub mod events;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;

use kit::bus::{ConsumerSpec, Ordering};
use kit::store::{Migrations, StoreError};
use utoipa::OpenApi;

use crate::service::{Consumers, Context, Service, ServiceName};
use events::apply::OrderAnswers;
use model::{OnHand, ProductId};

pub struct InventoryService;

const MIGRATIONS: Migrations = Migrations {
    component: "inventory",
    sqlite: &[include_str!("../../migrations/sqlite/inventory.sql")],
    postgres: &[include_str!("../../migrations/postgres/inventory.sql")],
};

/// The products a fresh shop stocks (the catalog seeds the same ids).
const SEED_PRODUCTS: u64 = 20;

/// Units on hand of seed product `n`: spread over 25..=100.
fn seed_units(n: u64) -> u64 {
    25 + (n * 37) % 76
}

impl Service for InventoryService {
    const NAME: ServiceName = ServiceName::Inventory;

    fn migrations() -> &'static Migrations {
        &MIGRATIONS
    }

    fn router(ctx: Arc<Context>) -> axum::Router {
        http::router(ctx)
    }

    fn openapi() -> utoipa::openapi::OpenApi {
        http::Api::openapi()
    }

    fn consume(ctx: &Arc<Context>, consumers: &mut Consumers) {
        // Per key: an order's OrderCancelled must not overtake its OrderPlaced.
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("orders"), &["order"]).ordering(Ordering::PerKey),
            OrderAnswers { outbox: ctx.outbox.clone() },
        );
    }

    async fn seed(ctx: Arc<Context>) -> Result<(), StoreError> {
        let outbox = ctx.outbox.clone();
        ctx.store
            .transact(move |tx| {
                if store::count(tx)? > 0 {
                    return Ok(());
                }
                for n in 1..=SEED_PRODUCTS {
                    let id = ProductId::parse(&format!("p-{n:03}")).expect("seed ids are valid");
                    let units = OnHand::new(seed_units(n)).expect("seed stock is valid");
                    store::set_on_hand(tx, &outbox, &id, units)
                        .map_err(|e| StoreError::Database(e.to_string()))?;
                }
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests;
