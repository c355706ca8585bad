//! The search service: a full-text index of products and orders, fed by events.
//!
//! It owns nothing; it keeps an SQLite FTS5 index of the catalog's products and the order
//! service's orders, fed asynchronously by two consumers: `search.catalog` (ProductAdded,
//! ProductPriceChanged) and `search.orders` (every order event). Both are version-gated and
//! unordered, so duplicates and reordering are harmless and a dead letter holds nothing
//! back. Results may lag their sources (DESIGN §1), so every answer carries the lag of both
//! consumers, measured per source stream.
//!
//! `search.orders` also counts the units of every order placed per product, the
//! [`bestsellers`] (`GET /bestsellers`): a counter that only the inbox makes exactly-once.
//!
//! # The poison marker
//!
//! A product whose name holds [`events::POISON_MARKER`] (`#poison`) cannot be indexed on
//! purpose: its event fails as retryable, is retried with backoff, becomes a dead letter
//! of `search.catalog` after its last attempt (3 by default), and every other event flows
//! on. That is scenario 4 (DESIGN §4): the fix is a newer version of the product without
//! the marker, after which replaying the dead letter is a harmless no-op (the gate holds a
//! newer version); or discard it.

pub mod bestsellers;
pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;

use kit::bus::{ConsumerSpec, Ordering};
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Consumers, Context, Service, ServiceName};
use events::{OrderIndex, ProductIndex};

pub struct SearchService;

/// The consumers feeding the index: (purpose, source stream).
pub const FEEDS: [(&str, &str); 2] = [("catalog", "catalog"), ("orders", "order")];

impl Service for SearchService {
    const NAME: ServiceName = ServiceName::Search;

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
        let [(catalog, catalog_stream), (orders, order_stream)] = FEEDS;
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name(catalog), &[catalog_stream]).ordering(Ordering::Unordered),
            ProductIndex { gate: ctx.gate.clone() },
        );
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name(orders), &[order_stream]).ordering(Ordering::Unordered),
            OrderIndex { gate: ctx.gate.clone() },
        );
    }
}

#[cfg(test)]
mod tests;
