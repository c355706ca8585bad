//! The inventory service: the source of truth for stock per product and the reservations
//! of placed orders, run as two sites, dc1 and dc2 (seed 000). It answers each OrderPlaced
//! asynchronously (DESIGN §1) with StockReserved or StockRejected naming what is short,
//! and releases a cancelled order's stock.
//!
//! **Sites.** Each site is an instance of this service with its own database
//! (`inventory-dc1.db`), its own outbox stream (`inventory-dc1`: seqs are per producer, so
//! two writers must not share one), its own consumers and its own port. An order is routed
//! to one site by its customer ([`sites::Site::of_customer`]); both sites read the order
//! stream and each answers only its own orders, so one order is answered once.
//!
//! **Counting** ([`merge`]). Each site writes only its own rows: its adjustment counters
//! (units added, units removed; grow-only) and the lines of its orders, each with a
//! version. The other site reads them from the bus over the link between the sites
//! (`inventory-dc1->inventory-dc2`) and replaces its copy only with a newer version, so
//! copies applied in any order, or twice, give the same view: on hand = Σ counters,
//! reserved = Σ unreleased reservation lines of both sites.
//!
//! **Reservations.** A placed order that fits the site's view gets a reservation at once:
//! its lines count against the stock from that moment. It is *waiting* while the other
//! site has not agreed to it — `pending` in cp, `provisional` in ap — and *final* once it
//! is `reserved`; a cancelled, refused or compensated one is `released`.
//!
//! **Modes** ([`agreement`]), a switch of `capshop up --inventory-mode`:
//! - `cp`: a reservation is `pending` until the other site has acknowledged it
//!   synchronously (through a [`crate::service::Peer`] with a breaker, over the same link).
//!   The other site acknowledges only what its own view can still reserve, and reserves it
//!   at once. Two concurrent reservations on both sites are each checked at one site with
//!   the other already counted, so the sum of acknowledged reservations never exceeds the
//!   stock; under contention, reservations give way by age (wait-die), so the sites do not
//!   refuse each other's forever. A site that cannot reach the other refuses with the
//!   reason; stock never goes below zero. Stock changes have one writer, the arbiter
//!   site: a change asked of dc2 is handed to dc1 ([`stock_writer`]), so two changes never
//!   count from views that miss each other's.
//! - `ap`: a reservation is accepted at once from the site's own view (`provisional`,
//!   announced by StockReserved with that status; the order waits in pending stock), also
//!   during a partition. It is arbitrated when its site sees the other again: the arbiter
//!   site (dc1) decides every verdict in its one database by a rule both sites could
//!   compute ([`merge::over`]: final lines first, then by placement time and order id; the
//!   latest placed orders that do not fit give back), and the owner of each order
//!   publishes the outcome once: StockReserved (the order is confirmed and may ship) or
//!   StockRejected with an apology, marked as a compensation (the order is cancelled
//!   with the apology and never ships).
//!   So an oversell during a partition is found and compensated before anything ships.
//!   Only a stock lowered at one site while the arbiter was deciding can leave final
//!   reservations beyond the stock; the owner then gives those back too ([`agreement`]'s
//!   recount), and the order service cancels them — if one had shipped already,
//!   [`audit::Audit`] counts it as oversold and shipped.
//!
//! The HTTP API of `/api/inventory` is dc1's; each site answers for the whole stock from
//! its view, and `/reservations?order_id=` asks the other site when it does not know the
//! order yet.

pub mod agreement;
pub mod audit;
pub mod events;
pub mod facts;
pub mod http;
pub mod merge;
pub mod model;
pub mod sites;
pub mod stock_writer;
pub mod store;

use std::sync::Arc;

use kit::bus::{Bus, ConsumerSpec, Ordering};
use kit::link::LinkedBus;
use kit::store::StoreError;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Consumers, Context, Service, ServiceName};
use events::apply::{OrderAnswers, SiteReplica};
use model::{OnHand, ProductId};

pub struct InventoryService;

/// The products a fresh shop stocks (the catalog seeds the same ids).
const SEED_PRODUCTS: u64 = 20;

/// Units on hand of seed product `n`: spread over 25..=100.
fn seed_units(n: u64) -> u64 {
    25 + (n * 37) % 76
}

impl Service for InventoryService {
    const NAME: ServiceName = ServiceName::Inventory;

    fn facts(
        tx: &mut kit::store::Tx<'_>,
        site: Option<crate::contracts::inventory::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, kit::store::StoreError> {
        facts::read(tx, site.expect("an inventory database is a site's"))
    }

    fn routes(ctx: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
        http::routes(ctx)
    }

    fn consume(ctx: &Arc<Context>, consumers: &mut Consumers) {
        let site = ctx.site.expect("an inventory instance is a site");
        let mode = ctx.choices.inventory;
        let agreement = Arc::new(Notify::new());
        // Per key: an order's OrderCancelled must not overtake its OrderPlaced.
        consumers.start(
            ConsumerSpec::new(ctx.consumer_name("orders"), &["order"]).ordering(Ordering::PerKey),
            OrderAnswers { outbox: ctx.outbox.clone(), site, mode, agreement: agreement.clone() },
        );
        // The other site's rows are versioned state: no ordering, no parking. They are
        // fetched over the link between the sites, so cutting it partitions the sites.
        let between = ctx.peer(ServiceName::Inventory).link().clone();
        let over_the_link: Arc<dyn Bus> = Arc::new(LinkedBus::new(ctx.bus.clone(), between));
        let other = site.peer().instance();
        consumers.start_on(
            over_the_link,
            ConsumerSpec::new(ctx.consumer_name("site-replica"), &[other.as_str()]),
            SiteReplica { agreement: agreement.clone() },
        );
        let shutdown = consumers.shutdown();
        consumers.spawn(agreement::run(ctx.clone(), site, mode, agreement, shutdown));
    }

    async fn seed(ctx: Arc<Context>) -> Result<(), StoreError> {
        ctx.store
            .transact(move |tx| {
                if store::count(tx)? > 0 {
                    return Ok(());
                }
                for n in 1..=SEED_PRODUCTS {
                    let id = ProductId::parse(&format!("p-{n:03}")).expect("seed ids are valid");
                    let units = OnHand::new(seed_units(n)).expect("seed stock is valid");
                    store::seed(tx, &id, units)?;
                }
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod shuffled;
#[cfg(test)]
mod tests;
