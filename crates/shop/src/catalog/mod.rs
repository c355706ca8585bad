//! The catalog service: the source of truth for products and their prices. It consumes
//! nothing; order and search replicate what it publishes. Its quote is synchronous and
//! consistent (the price a customer pays), while `GET /popular` is served from a cache
//! that may fail and then answers "features limited" at once (seed 003).

pub mod cache;
pub mod events;
pub mod facts;
pub mod http;
pub mod model;
pub mod store;

use std::sync::Arc;

use kit::link::Link;
use kit::store::StoreError;
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Context, Service, ServiceName};
use model::{NewProduct, ProductId};

pub struct CatalogService;

/// The products of a fresh shop, `p-001` … `p-020` in this order: (name, description, price).
const SEED: [(&str, &str, u64); 20] = [
    ("Classic Baseball Cap", "Six-panel cotton twill cap with a curved brim and a brass buckle.", 1999),
    ("Wool Beanie", "Ribbed merino beanie, warm without the itch.", 2499),
    ("Trucker Cap", "Foam front, mesh back and a snapback strap.", 1799),
    ("Flat Cap", "Herringbone tweed flat cap with a quilted lining.", 3999),
    ("Bucket Hat", "Washed canvas bucket hat that packs flat.", 2299),
    ("Sun Hat", "Wide-brim straw hat with a chin cord, UPF 50.", 3499),
    ("Rain Hat", "Waxed cotton hat with taped seams and a short back brim.", 2999),
    ("Winter Trapper Hat", "Insulated trapper with fold-down ear flaps.", 4999),
    ("Knit Headband", "Cable-knit headband that keeps the ears warm on a run.", 1299),
    ("Running Cap", "Featherweight cap with a perforated crown and a reflective trim.", 2199),
    ("Fedora", "Felted wool fedora with a grosgrain band.", 6999),
    ("Panama Hat", "Hand-woven toquilla straw hat from Ecuador.", 12999),
    ("Cap Brush", "Horsehair brush for felt and wool hats.", 899),
    ("Hat Box", "Round card hat box with a lid, fits a wide brim.", 1599),
    ("Cap Washer Cage", "Keeps a cap's shape in the dishwasher or washing machine.", 999),
    ("Neck Gaiter", "Seamless stretch tube: scarf, mask or headband.", 1499),
    ("Sunglasses Strap", "Floating cord that keeps sunglasses on deck.", 799),
    ("Embroidered Patch", "Iron-on patch with the capshop logo.", 499),
    ("Cap Clip", "Clip that holds a cap on a bag strap.", 699),
    ("Gift Card", "A gift card worth 50.00 for anything in the shop.", 5000),
];

impl Service for CatalogService {
    const NAME: ServiceName = ServiceName::Catalog;

    fn facts(
        tx: &mut kit::store::Tx<'_>,
        _: Option<crate::contracts::inventory::Site>,
    ) -> Result<crate::contracts::facts::ServiceFacts, kit::store::StoreError> {
        facts::read(tx)
    }

    fn routes(ctx: &Arc<Context>) -> OpenApiRouter<Arc<Context>> {
        // Made now, so the cache's breaker is in the metrics before the first /popular.
        cache::of(ctx);
        http::routes(ctx)
    }

    async fn seed(ctx: Arc<Context>) -> Result<(), StoreError> {
        let outbox = ctx.outbox.clone();
        ctx.store
            .transact(move |tx| {
                if store::count(tx)? > 0 {
                    return Ok(());
                }
                for (n, (name, description, price_cents)) in (1..).zip(SEED) {
                    let id = ProductId::numbered(n);
                    let new = NewProduct::parse(Some(id.as_str()), name, description, price_cents)
                        .expect("seed products are valid");
                    store::add(tx, &outbox, new).map_err(|e| StoreError::Database(e.to_string()))?;
                }
                Ok(())
            })
            .await
    }
}

/// The link between the catalog of `ctx` and its popularity cache (`catalog->cache`):
/// cutting it makes `GET /popular` answer `limited: true` at once. Chaos controls add it
/// to their links by this function; see [`cache::of`] for how it is kept.
pub fn cache_link(ctx: &Arc<Context>) -> Link {
    cache::of(ctx).link().clone()
}

#[cfg(test)]
mod tests;
