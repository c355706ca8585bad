//! The search service fed by the catalog's and the order service's events over the
//! embedded bus, and asked through its HTTP API.

mod shuffled;

use std::collections::HashMap;
use std::sync::Arc;

use kit::bus::{Bus, DeadLetterFilter};
use kit::envelope::NewEvent;
use serde_json::Value;

use super::SearchService;
use crate::contracts::catalog::{PRODUCT_ADDED, PRODUCT_PRICE_CHANGED, Product};
use crate::contracts::customer::Address;
use crate::contracts::order::{AddressSource, ORDER_CONFIRMED, ORDER_PLACED, Order, OrderLine, OrderStatus};
use crate::service::testing::{Producer, Running, eventually, spawn};

struct Harness {
    service: Running,
    bus: Arc<dyn Bus>,
    catalog: Producer,
    orders: Producer,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    Harness {
        service: spawn::<SearchService>(dir.path(), bus.clone(), HashMap::new()).await,
        catalog: Producer::open(dir.path(), "catalog", bus.clone()).await,
        orders: Producer::open(dir.path(), "order", bus.clone()).await,
        bus,
        _dir: dir,
    }
}

pub(super) fn product(id: &str, name: &str, price_cents: u64, version: u64) -> Product {
    Product {
        id: id.into(),
        name: name.into(),
        description: format!("{name}, made to last"),
        price_cents,
        version,
    }
}

pub(super) fn order(id: &str, customer_id: &str, lines: &[&str], status: OrderStatus, version: u64) -> Order {
    Order {
        id: id.into(),
        customer_id: customer_id.into(),
        status,
        lines: lines
            .iter()
            .enumerate()
            .map(|(n, name)| OrderLine {
                product_id: format!("p-{:03}", n + 1),
                name: (*name).into(),
                quantity: 1,
                unit_price_cents: 500,
            })
            .collect(),
        total_cents: 500 * lines.len() as u64,
        address: Address {
            line1: "1 Infinite Loop".into(),
            city: "Cupertino".into(),
            postcode: "95014".into(),
            country: "US".into(),
        },
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: format!("a-{id}"),
        reason: None,
        version,
    }
}

fn added(products: &[Product]) -> Vec<NewEvent> {
    products.iter().map(|p| crate::contracts::catalog::event(PRODUCT_ADDED, p)).collect()
}

impl Harness {
    /// GETs `path` signed in as c-ada: she finds products and her own orders only.
    async fn get(&self, path: &str) -> (u16, Value) {
        let request = reqwest::Client::new().get(self.service.url(path));
        let response = request.bearer_auth(self.service.session_of("c-ada")).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn search(&self, query: &str) -> Value {
        let (status, answer) = self.get(&format!("/search?{query}")).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// The ids found by `query`, best first.
    async fn found(&self, query: &str) -> Vec<String> {
        let answer = self.search(query).await;
        answer["results"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_owned()).collect()
    }

    /// Waits until `query` finds exactly `ids` (in any order).
    async fn finds(&self, query: &str, ids: &[&str]) -> Value {
        let mut wanted: Vec<_> = ids.iter().map(|id| id.to_string()).collect();
        wanted.sort();
        eventually(&format!("{query} to find {ids:?}"), || async {
            let answer = self.search(query).await;
            let mut found: Vec<String> = answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_owned())
                .collect();
            found.sort();
            (found == wanted).then_some(answer)
        })
        .await
    }

    /// Waits until both consumers have applied everything their sources published.
    async fn caught_up(&self) {
        eventually("the index to catch up", || async {
            let (_, status) = self.get("/status").await;
            let lags = status["lag"].as_array().unwrap().clone();
            lags.iter()
                .flat_map(|c| c["streams"].as_array().unwrap().clone())
                .all(|s| s["events_behind"] == 0)
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn products_announced_by_the_catalog_are_found_by_the_words_of_their_names() {
    let shop = harness().await;
    shop.catalog
        .emit(added(&[
            product("p-001", "Blue Enamel Mug", 1299, 1),
            product("p-002", "Red Kettle", 3450, 1),
            product("p-003", "Blue Wool Blanket", 5900, 1),
        ]))
        .await;

    let answer = shop.finds("q=enamel+mug", &["p-001"]).await;
    let hit = &answer["results"][0];
    assert_eq!((hit["kind"].as_str(), hit["title"].as_str()), (Some("product"), Some("Blue Enamel Mug")));
    assert!(hit["snippet"].as_str().unwrap().contains("[Mug]"), "{hit}");
    assert!(hit["score"].as_f64().unwrap() > 0.0, "{hit}");
    assert_eq!(answer["query"], "enamel mug");
    let lag = answer["lag"].as_array().unwrap();
    let consumers: Vec<_> = lag.iter().map(|c| c["consumer"].as_str().unwrap()).collect();
    assert_eq!(consumers, ["search.catalog", "search.orders"]);
    assert_eq!(lag[0]["streams"][0]["stream"], "catalog");
    assert!(lag[0]["streams"][0]["applied_seq"].as_u64().unwrap() >= 1, "{lag:?}");

    shop.finds("q=blue", &["p-001", "p-003"]).await;
    shop.finds("q=p-002", &["p-002"]).await;
    shop.finds("q=kettle+OR+blanket", &["p-002", "p-003"]).await;
    shop.finds("q=blan*", &["p-003"]).await;
    assert!(shop.found("q=blue&kind=order").await.is_empty());
    assert_eq!(shop.found("q=blue&limit=1").await.len(), 1);
}

#[tokio::test]
async fn a_price_change_is_reflected_in_the_index() {
    let shop = harness().await;
    shop.catalog.emit(added(&[product("p-001", "Blue Enamel Mug", 1299, 1)])).await;
    shop.finds("q=12.99", &["p-001"]).await;
    let changed = product("p-001", "Blue Enamel Mug", 1999, 2);
    shop.catalog.emit(vec![crate::contracts::catalog::event(PRODUCT_PRICE_CHANGED, &changed)]).await;

    let answer = shop.finds("q=19.99", &["p-001"]).await;
    assert_eq!(answer["results"][0]["version"], 2);
    assert!(shop.found("q=12.99").await.is_empty(), "the old price is gone from the index");
}

#[tokio::test]
async fn orders_are_found_by_id_customer_status_and_product_names() {
    let shop = harness().await;
    let placed = order("o-0193aa", "c-ada", &["Blue Enamel Mug", "Red Kettle"], OrderStatus::PendingStock, 1);
    let other = order("o-0193bb", "c-bob", &["Wool Blanket"], OrderStatus::PendingStock, 1);
    let confirmed = order("o-0193aa", "c-ada", &["Blue Enamel Mug", "Red Kettle"], OrderStatus::Confirmed, 2);
    let events = crate::contracts::order::event;
    shop.orders
        .emit(vec![
            events(ORDER_PLACED, &placed),
            events(ORDER_PLACED, &other),
            events(ORDER_CONFIRMED, &confirmed),
        ])
        .await;

    let answer = shop.finds("q=o-0193aa", &["o-0193aa"]).await;
    assert_eq!(answer["results"][0]["kind"], "order");
    shop.finds("q=confirmed", &["o-0193aa"]).await;
    shop.finds("q=kettle&kind=order", &["o-0193aa"]).await;
    // Bob's order is indexed, but only Bob finds it.
    assert!(shop.found("q=c-bob").await.is_empty());
    assert!(shop.found("q=pending_stock").await.is_empty());
    let anonymous = reqwest::get(shop.service.url("/search?q=blanket")).await.unwrap();
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["results"], serde_json::json!([]));
    let anonymous = reqwest::get(shop.service.url("/search?q=kettle&kind=order")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert!(shop.found("q=kettle&kind=product").await.is_empty());
    let (_, status) = shop.get("/status").await;
    assert_eq!(status["documents"]["orders"], 2, "{status}");
}

#[tokio::test]
async fn an_older_version_arriving_after_a_newer_one_does_not_regress_the_index() {
    let shop = harness().await;
    let newer = product("p-004", "Copper Kettle", 4500, 2);
    let older = product("p-004", "Tin Kettle", 3000, 1);
    shop.catalog.emit(vec![crate::contracts::catalog::event(PRODUCT_PRICE_CHANGED, &newer)]).await;
    shop.catalog.emit(added(&[older.clone(), older])).await;
    let cancelled = order("o-0193cc", "c-ada", &["Copper Kettle"], OrderStatus::Cancelled, 3);
    let placed = order("o-0193cc", "c-ada", &["Copper Kettle"], OrderStatus::PendingStock, 1);
    let events = crate::contracts::order::event;
    shop.orders.emit(vec![events("OrderCancelled", &cancelled), events(ORDER_PLACED, &placed)]).await;
    shop.caught_up().await;

    let answer = shop.finds("q=kettle&kind=product", &["p-004"]).await;
    assert_eq!(answer["results"][0]["title"], "Copper Kettle");
    assert_eq!(answer["results"][0]["version"], 2);
    assert!(shop.found("q=tin").await.is_empty());
    shop.finds("q=cancelled", &["o-0193cc"]).await;
    assert!(shop.found("q=pending").await.is_empty());
}

#[tokio::test]
async fn empty_and_unparsable_queries_are_refused_with_clear_problems() {
    let shop = harness().await;
    for (query, detail) in [
        ("q=", "q must not be empty"),
        ("", "q must not be empty"),
        ("q=%22blue+mug", "the query cannot be parsed"),
        ("q=mug+AND", "the query cannot be parsed"),
        ("q=nosuchcolumn:mug", "the query cannot be parsed"),
        ("q=mug&kind=customer", "kind \"customer\" is neither product nor order"),
        ("q=mug&limit=0", "limit must be between 1 and 100"),
        ("q=mug&limit=many", "bad query"),
        ("q=mug&sort=price", "bad query"),
    ] {
        let response = reqwest::get(shop.service.url(&format!("/search?{query}"))).await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().starts_with(detail), "{query}: {problem}");
    }
    let (_, openapi) = shop.get("/openapi.json").await;
    assert!(openapi["paths"]["/search"]["get"].is_object());
    assert!(openapi["paths"]["/status"]["get"].is_object());
}

#[tokio::test]
async fn a_poisoned_product_is_dead_lettered_after_three_attempts_while_the_others_are_indexed() {
    let shop = harness().await;
    shop.catalog
        .emit(added(&[
            product("p-010", "Green Teapot", 2500, 1),
            product("p-011", "Cursed Lamp #poison", 1500, 1),
            product("p-012", "Green Lamp", 3100, 1),
        ]))
        .await;

    shop.finds("q=green", &["p-010", "p-012"]).await;
    let filter = DeadLetterFilter::all().consumer("search.catalog");
    let letter = eventually("the poisoned product to be dead-lettered", || async {
        shop.bus.dead_letters(&filter).await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!(letter.message.key, "p-011");
    assert_eq!(letter.attempts, 3);
    assert!(letter.error.starts_with("cannot index product p-011"), "{}", letter.error);
    assert!(shop.found("q=cursed").await.is_empty());
    let lag = shop.search("q=lamp").await["lag"][0]["streams"][0].clone();
    assert_eq!(lag["applied_seq"], lag["published_seq"], "the consumer moved on past the dead letter: {lag}");

    // The fix: a newer version without the marker; the replayed letter is then a no-op.
    let fixed = product("p-011", "Blessed Lamp", 1500, 2);
    shop.catalog.emit(vec![crate::contracts::catalog::event(PRODUCT_PRICE_CHANGED, &fixed)]).await;
    shop.finds("q=blessed", &["p-011"]).await;
    assert_eq!(shop.bus.replay(&filter).await.unwrap(), 1);
    // Once the replayed letter is applied, the consumer's floor passes its seq.
    let seq = letter.message.seq;
    eventually("the replayed letter to be applied", || async {
        let floor: Option<u64> = shop
            .service
            .ctx
            .store
            .transact(move |tx| {
                tx.query_opt(
                    "SELECT seq FROM kit_inbox_floor WHERE consumer = 'search.catalog' AND stream = 'catalog'",
                    &[],
                )?
                .map(|row| row.get(0))
                .transpose()
            })
            .await
            .unwrap();
        floor.filter(|floor| *floor >= seq).map(|_| ())
    })
    .await;
    assert!(shop.bus.dead_letters(&filter).await.unwrap().is_empty());
    shop.finds("q=lamp", &["p-011", "p-012"]).await;
}

#[tokio::test]
async fn bestsellers_count_the_units_of_every_order_placed_whatever_arrives_first() {
    let shop = harness().await;
    shop.catalog
        .emit(added(&[product("p-001", "Blue Enamel Mug", 1299, 1), product("p-002", "Red Kettle", 3450, 1)]))
        .await;
    let mut first =
        order("o-0193dd", "c-ada", &["Blue Enamel Mug", "Red Kettle"], OrderStatus::PendingStock, 1);
    first.lines[1].quantity = 3;
    let second = order("o-0193ee", "c-bob", &["Blue Enamel Mug"], OrderStatus::PendingStock, 1);
    let confirmed = Order { status: OrderStatus::Confirmed, version: 2, ..first.clone() };
    let events = crate::contracts::order::event;
    // The confirmation is indexed first; the older placement still counts, the confirmation
    // does not count again.
    shop.orders.emit(vec![events(ORDER_CONFIRMED, &confirmed)]).await;
    shop.finds("q=confirmed&kind=order", &["o-0193dd"]).await;
    shop.orders.emit(vec![events(ORDER_PLACED, &first), events(ORDER_PLACED, &second)]).await;
    shop.caught_up().await;

    let (status, answer) = shop.get("/bestsellers").await;
    assert_eq!(status, 200, "{answer}");
    let expected = serde_json::json!([
        { "product_id": "p-002", "name": "Red Kettle", "units_ordered": 3 },
        { "product_id": "p-001", "name": "Blue Enamel Mug", "units_ordered": 2 },
    ]);
    assert_eq!(answer["results"], expected, "{answer}");
    assert_eq!(answer["lag"][1]["consumer"], "search.orders", "{answer}");
    let (_, top) = shop.get("/bestsellers?limit=1").await;
    assert_eq!(top["results"], serde_json::json!([expected[0]]), "{top}");
    for (query, detail) in [
        ("limit=0", "limit must be between 1 and 100"),
        ("limit=101", "limit must be between 1 and 100"),
        ("sort=units", "bad query"),
    ] {
        let (status, problem) = shop.get(&format!("/bestsellers?{query}")).await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with(detail), "{query}: {problem}");
    }
}
