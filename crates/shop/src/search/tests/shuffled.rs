//! Shuffled and duplicated deliveries (DESIGN §2, §6): both index handlers get a history
//! of product and order changes through their consumers' inboxes, delivered in a random
//! order, some events more than once, in batches; the index ends as in-order delivery
//! leaves it, the full-text table agrees with the documents it indexes, and the
//! bestsellers counter (which only the inbox keeps from counting a copy) holds the units of
//! every order placed once.

use std::collections::BTreeMap;

use kit::consumer::Handler;
use kit::delivery::deliver as through_inbox;
use kit::envelope::Envelope;
use kit::replica::VersionGate;
use kit::store::{Store, StoreError};
use proptest::prelude::*;

use super::{order, product};
use crate::contracts::catalog::{PRODUCT_ADDED, PRODUCT_PRICE_CHANGED};
use crate::contracts::order::{ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_PLACED, OrderStatus};
use crate::search::events::{OrderIndex, ProductIndex};
use crate::search::model::{Document, SearchQuery};
use crate::search::{bestsellers, store};
use crate::service::testing::{envelope, scrambled};

const NAMES: [&str; 4] = ["Blue Mug", "Red Kettle", "Wool Blanket", "Copper Pan"];

/// One change of the history: a product (re)priced or renamed, or an order moved on.
#[derive(Debug, Clone)]
enum Change {
    Product { n: usize, name: usize, price: u64 },
    Order { n: usize },
}

/// A history of changes; per key, versions 1..=k in the order they were published.
fn history() -> impl Strategy<Value = Vec<Envelope>> {
    let change = prop_oneof![
        (0..3usize, 0..NAMES.len(), 100..9_000u64).prop_map(|(n, name, price)| Change::Product {
            n,
            name,
            price
        }),
        (0..3usize).prop_map(|n| Change::Order { n }),
    ];
    prop::collection::vec(change, 1..30).prop_map(|changes| {
        let (mut products, mut orders) = ([0u64; 3], [0u64; 3]);
        changes
            .into_iter()
            .zip(1..)
            .filter_map(|(change, seq)| match change {
                Change::Product { n, name, price } => {
                    products[n] += 1;
                    let v = products[n];
                    let kind = if v == 1 { PRODUCT_ADDED } else { PRODUCT_PRICE_CHANGED };
                    let p = product(&format!("p-00{n}"), NAMES[name], price, v);
                    Some(envelope("catalog", &crate::contracts::catalog::event(kind, &p), seq))
                }
                Change::Order { n } if orders[n] < 3 => {
                    orders[n] += 1;
                    let (kind, status) = match orders[n] {
                        1 => (ORDER_PLACED, OrderStatus::PendingStock),
                        2 => (ORDER_CONFIRMED, OrderStatus::Confirmed),
                        _ => (ORDER_CANCELLED, OrderStatus::Cancelled),
                    };
                    let o = order(&format!("o-00{n}"), "c-ada", &NAMES[..=n], status, orders[n]);
                    Some(envelope("order", &crate::contracts::order::event(kind, &o), seq))
                }
                Change::Order { .. } => None,
            })
            .collect()
    })
}

async fn index() -> Store {
    Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Search.migrations()],
    )
    .await
    .unwrap()
}

/// Delivers each batch in one transaction through the inboxes of `search.catalog` and
/// `search.orders`, as the consumer runtime does.
async fn deliver(store: &Store, batches: Vec<Vec<Envelope>>) {
    let gate = VersionGate::new();
    for batch in batches {
        let (products, orders) = (ProductIndex { gate: gate.clone() }, OrderIndex { gate: gate.clone() });
        store
            .transact(move |tx| {
                let (catalog, order): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|event| event.stream.as_str() == "catalog");
                let feeds: [(&str, &dyn Handler, _); 2] =
                    [("search.catalog", &products, catalog), ("search.orders", &orders, order)];
                for (consumer, handler, events) in feeds {
                    let delivered = through_inbox(tx, consumer, handler, events, 0)?;
                    assert!(delivered.failed.is_empty(), "the index applies every event: {delivered:?}");
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }
}

/// The units of each product in the history's orders placed, one OrderPlaced each.
fn units_placed(events: &[Envelope]) -> Vec<(String, u64)> {
    let mut units: BTreeMap<String, u64> = BTreeMap::new();
    for event in events.iter().filter(|e| e.kind == ORDER_PLACED) {
        let placed: crate::contracts::order::Order = event.payload_as().unwrap();
        for line in placed.lines {
            *units.entry(line.product_id).or_default() += u64::from(line.quantity);
        }
    }
    units.into_iter().collect()
}

async fn units_ordered(store: &Store) -> Vec<(String, u64)> {
    store.transact(bestsellers::all).await.unwrap()
}

/// Every document, and for each the ids the full-text index finds by its title's words.
async fn contents(store: &Store) -> Vec<(Document, Vec<String>)> {
    store
        .transact(|tx| {
            let mut contents = Vec::new();
            for document in store::documents(tx)? {
                let words: Vec<String> = document.title.split(' ').map(|w| format!("\"{w}\"")).collect();
                let query =
                    SearchQuery::parse(Some(&words.join(" AND ")), Some(document.kind.as_str()), Some(100))
                        .unwrap();
                let found = store::search(tx, &query, Some("c-ada"))
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                contents.push((document, found.into_iter().map(|hit| hit.id).collect()));
            }
            Ok::<_, StoreError>(contents)
        })
        .await
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shuffled_and_duplicated_delivery_ends_in_the_in_order_index((events, batches) in scrambled(history())) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (in_order, shuffled) = (index().await, index().await);
            let placed = units_placed(&events);
            deliver(&in_order, vec![events]).await;
            deliver(&shuffled, batches).await;
            let expected = contents(&in_order).await;
            assert!(expected.iter().all(|(d, found)| found.contains(&d.id)), "every document is found by its title");
            assert_eq!(contents(&shuffled).await, expected);
            assert_eq!(units_ordered(&in_order).await, placed, "in order, every placement counts once");
            assert_eq!(units_ordered(&shuffled).await, placed, "shuffled and copied, every placement counts once");
        });
    }
}
