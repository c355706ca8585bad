//! Shuffled and duplicated deliveries of the other site's events (DESIGN §2, §6): dc1's
//! [`SiteReplica`] is called directly with a history of dc2's counter changes and
//! reservation lifecycles, delivered in a random order, some events more than once, in
//! batches; dc1's view ends as in-order delivery leaves it, and so does the compensation
//! rule computed on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kit::consumer::Handler;
use kit::envelope::Envelope;
use kit::store::{Store, StoreError};
use proptest::prelude::*;
use tokio::sync::Notify;

use super::events::apply::SiteReplica;
use super::events::{
    self, Reservation, STOCK_REJECTED, STOCK_RELEASED, STOCK_RESERVED, StockLine, level_event,
    reservation_event,
};
use super::merge::{self, SiteStock};
use super::model::{ReservationLine, ReservationStatus, Stock};
use super::sites::Site;
use super::store;
use crate::service::testing::{envelope, scrambled};

const PRODUCTS: [&str; 2] = ["p-001", "p-002"];

/// One change at dc2: stock added or removed, or an order moved one step on.
#[derive(Debug, Clone)]
enum Change {
    Adjust { product: usize, add: bool, units: u64 },
    Order { n: usize, quantity: u32, product: usize, kept: bool },
}

/// The next step of an order's reservation at dc2, if it has one.
fn step(version: u64, kept: bool) -> Option<(&'static str, ReservationStatus)> {
    match (version, kept) {
        (0, _) => Some((STOCK_RESERVED, ReservationStatus::Provisional)),
        (1, true) => Some((STOCK_RESERVED, ReservationStatus::Reserved)),
        (1, false) => Some((STOCK_REJECTED, ReservationStatus::Released)),
        (2, true) => Some((STOCK_RELEASED, ReservationStatus::Released)),
        _ => None,
    }
}

/// A history of dc2's events, per key in the order dc2 published them.
fn history() -> impl Strategy<Value = Vec<Envelope>> {
    let change = prop_oneof![
        (0..2usize, any::<bool>(), 1..20u64).prop_map(|(product, add, units)| Change::Adjust {
            product,
            add,
            units
        }),
        (0..4usize, 1..4u32, 0..2usize, any::<bool>())
            .prop_map(|(n, quantity, product, kept)| Change::Order { n, quantity, product, kept }),
    ];
    prop::collection::vec(change, 1..40).prop_map(|changes| {
        let mut counters: Vec<SiteStock> = PRODUCTS
            .iter()
            .map(|p| SiteStock { site: Site::Dc2, product_id: (*p).into(), added: 0, removed: 0, version: 0 })
            .collect();
        let mut orders: BTreeMap<usize, (u64, u32, usize, bool)> = BTreeMap::new();
        let mut out = Vec::new();
        for (change, seq) in changes.into_iter().zip(1..) {
            let event = match change {
                Change::Adjust { product, add, units } => {
                    let c = &mut counters[product];
                    if add {
                        c.added += units
                    } else {
                        c.removed += units
                    }
                    c.version += 1;
                    level_event(c)
                }
                Change::Order { n, quantity, product, kept } => {
                    let (version, quantity, product, kept) =
                        *orders.entry(n).or_insert((0, quantity, product, kept));
                    let Some((kind, status)) = step(version, kept) else { continue };
                    orders.insert(n, (version + 1, quantity, product, kept));
                    let reservation = Reservation {
                        order_id: format!("o-{n}"),
                        lines: vec![StockLine { product_id: PRODUCTS[product].into(), quantity }],
                        reason: None,
                        site: Some(Site::Dc2),
                        status: Some(status),
                        placed_at_ms: 1_000 + n as u64,
                        compensated: false,
                    };
                    reservation_event(kind, &reservation, version + 1)
                }
            };
            out.push(envelope("inventory-dc2", &event, seq));
        }
        out
    })
}

/// dc1's store, seeded with 10 units of each product.
async fn dc1() -> Store {
    let store = Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Inventory.migrations()],
    )
    .await
    .unwrap();
    store
        .transact(|tx| {
            for p in PRODUCTS {
                let id = super::model::ProductId::parse(p).unwrap();
                store::seed(tx, &id, super::model::OnHand::new(10).unwrap())?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    store
}

fn replica() -> SiteReplica {
    SiteReplica { agreement: Arc::new(Notify::new()) }
}

/// Delivers each batch in one transaction, as the consumer runtime does.
async fn deliver(store: &Store, batches: Vec<Vec<Envelope>>) {
    for batch in batches {
        store
            .transact(move |tx| {
                let handler = replica();
                for event in &batch {
                    handler.handle(tx, event).expect("the replica applies the event");
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }
}

/// dc1's view of each product, its lines, and the orders the rule would give back.
async fn view(store: &Store) -> Vec<(Stock, Vec<ReservationLine>, Vec<String>)> {
    store
        .transact(|tx| {
            let mut all = Vec::new();
            for p in PRODUCTS {
                let stock = store::stock(tx, p)?.expect("seeded");
                let lines = store::product_lines(tx, p)?;
                let over = merge::over(stock.on_hand, &lines).into_iter().collect();
                all.push((stock, lines, over));
            }
            Ok::<_, StoreError>(all)
        })
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shuffled_and_duplicated_delivery_of_the_other_sites_events_ends_in_the_in_order_view(
        (events, batches) in scrambled(history())
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (in_order, shuffled) = (dc1().await, dc1().await);
            deliver(&in_order, vec![events]).await;
            deliver(&shuffled, batches).await;
            assert_eq!(view(&shuffled).await, view(&in_order).await);
        });
    }
}

#[tokio::test]
async fn an_event_about_another_site_than_its_stream_is_refused_for_dead_letters() {
    let store = dc1().await;
    let forged = SiteStock { site: Site::Dc1, product_id: "p-001".into(), added: 99, removed: 0, version: 5 };
    let event = envelope("inventory-dc2", &events::level_event(&forged), 1);
    let refused = store.transact(move |tx| Ok::<_, StoreError>(replica().handle(tx, &event))).await.unwrap();
    let error = refused.expect_err("a forged event is refused");
    assert!(!error.is_retryable(), "dead-lettered at once, not retried: {error:?}");
    assert_eq!(view(&store).await[0].0.on_hand, 10, "nothing changed");
}
