use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kit::bus::{Bus, ConsumerSpec};
use kit::envelope::Envelope;
use kit::link::Faults;
use serde_json::{Value, json};

use super::{CatalogService, cache_link};
use crate::service::testing::{ADMIN_TOKEN, Running, spawn};

async fn catalog_service() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    (spawn::<CatalogService>(dir.path(), bus, HashMap::new()).await, dir)
}

/// The first `n` events of the catalog stream, read by a fresh consumer.
async fn published(bus: &Arc<dyn Bus>, n: usize) -> Vec<Envelope> {
    let mut subscription = bus.subscribe(&ConsumerSpec::new("test.reader", &["catalog"])).await.unwrap();
    let mut events = Vec::new();
    while events.len() < n {
        let deliveries = tokio::time::timeout(Duration::from_secs(10), subscription.fetch(n - events.len()))
            .await
            .expect("the relay publishes the events")
            .unwrap();
        events
            .extend(deliveries.iter().map(|d| serde_json::from_slice::<Envelope>(&d.message.body).unwrap()));
    }
    events
}

async fn quote(service: &Running, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(service.url("/quote")).json(&body).send().await.unwrap()
}

async fn popular(service: &Running) -> Value {
    reqwest::get(service.url("/popular")).await.unwrap().json().await.unwrap()
}

async fn assert_problem(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    problem["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_fresh_catalog_is_seeded_with_twenty_products_and_publishes_each() {
    let (service, _dir) = catalog_service().await;
    let products: Vec<Value> = reqwest::get(service.url("/products")).await.unwrap().json().await.unwrap();
    assert_eq!(products.len(), 20);
    assert_eq!(products[0]["id"], "p-001");
    assert_eq!(products[19]["id"], "p-020");
    for p in &products {
        assert!(!p["name"].as_str().unwrap().is_empty() && !p["description"].as_str().unwrap().is_empty());
        assert!(p["price_cents"].as_u64().unwrap() > 0);
        assert_eq!(p["version"], 1);
    }
    let events = published(&service.ctx.bus, 20).await;
    assert!(events.iter().all(|e| e.kind == super::events::PRODUCT_ADDED && e.version == 1));
    assert_eq!(events[6].key, "p-007");
    assert_eq!(events[6].payload, products[6]);
}

#[tokio::test]
async fn a_quote_prices_every_line_at_the_current_price() {
    let (service, _dir) = catalog_service().await;
    let items = json!({ "items": [
        { "product_id": "p-001", "quantity": 2 },
        { "product_id": "p-012", "quantity": 1 },
    ] });
    let response = quote(&service, items).await;
    assert_eq!(response.status(), 200);
    let quote: Value = response.json().await.unwrap();
    assert_eq!(quote["lines"][0]["name"], "Classic Baseball Cap");
    assert_eq!(quote["lines"][0]["unit_price_cents"], 1999);
    assert_eq!(quote["lines"][0]["line_cents"], 3998);
    assert_eq!(quote["lines"][1]["line_cents"], 12999);
    assert_eq!(quote["total_cents"], 3998 + 12999);
}

#[tokio::test]
async fn a_quote_naming_unknown_products_is_refused_naming_them() {
    let (service, _dir) = catalog_service().await;
    let items = json!({ "items": [
        { "product_id": "p-001", "quantity": 1 },
        { "product_id": "p-999", "quantity": 1 },
        { "product_id": "p-998", "quantity": 3 },
    ] });
    let detail = assert_problem(quote(&service, items).await, 422).await;
    assert_eq!(detail, "unknown products p-999, p-998");
    let items = json!({ "items": [{ "product_id": "shoe", "quantity": 1 }] });
    assert_eq!(assert_problem(quote(&service, items).await, 422).await, "unknown product shoe");
}

#[tokio::test]
async fn a_quote_without_items_with_a_bad_quantity_or_malformed_is_refused_with_a_problem() {
    let (service, _dir) = catalog_service().await;
    let detail = assert_problem(quote(&service, json!({ "items": [] })).await, 422).await;
    assert_eq!(detail, "items must not be empty");
    let zero = json!({ "items": [{ "product_id": "p-001", "quantity": 0 }] });
    assert_eq!(
        assert_problem(quote(&service, zero).await, 422).await,
        "items[0].quantity must be between 1 and 1000"
    );
    let many = json!({ "items": [{ "product_id": "p-001", "quantity": 1001 }] });
    assert_problem(quote(&service, many).await, 422).await;
    let negative = json!({ "items": [{ "product_id": "p-001", "quantity": -1 }] });
    assert_problem(quote(&service, negative).await, 422).await;
    assert_problem(quote(&service, json!({ "lines": [] })).await, 422).await;
    let response = reqwest::Client::new()
        .post(service.url("/quote"))
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400).await;
}

#[tokio::test]
async fn changing_a_price_needs_the_admin_token_and_publishes_the_product_at_its_next_version() {
    let (service, _dir) = catalog_service().await;
    let client = reqwest::Client::new();
    let url = service.url("/products/p-003/price");
    let change = json!({ "price_cents": 1500 });
    assert_problem(client.put(&url).json(&change).send().await.unwrap(), 401).await;
    assert_problem(client.put(&url).bearer_auth("wrong").json(&change).send().await.unwrap(), 403).await;
    let unchanged: Value = reqwest::get(service.url("/products/p-003")).await.unwrap().json().await.unwrap();
    assert_eq!((unchanged["price_cents"].as_u64(), unchanged["version"].as_u64()), (Some(1799), Some(1)));

    let response = client.put(&url).bearer_auth(ADMIN_TOKEN).json(&change).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["consistency-token"], "product/p-003@2");
    let product: Value = response.json().await.unwrap();
    assert_eq!((product["price_cents"].as_u64(), product["version"].as_u64()), (Some(1500), Some(2)));

    let events = published(&service.ctx.bus, 21).await;
    assert_eq!(events[20].kind, super::events::PRODUCT_PRICE_CHANGED);
    assert_eq!((events[20].key.as_str(), events[20].version), ("p-003", 2));
    assert_eq!(events[20].payload["price_cents"], 1500);
    let items = json!({ "items": [{ "product_id": "p-003", "quantity": 2 }] });
    let quoted: Value = quote(&service, items).await.json().await.unwrap();
    assert_eq!(quoted["total_cents"], 3000);
}

#[tokio::test]
async fn renaming_a_product_needs_the_admin_token_publishes_it_renamed_and_refuses_an_empty_name() {
    let (service, _dir) = catalog_service().await;
    let client = reqwest::Client::new();
    let url = service.url("/products/p-004/name");
    assert_problem(client.put(&url).json(&json!({ "name": "Cap" })).send().await.unwrap(), 401).await;
    let empty =
        client.put(&url).bearer_auth(ADMIN_TOKEN).json(&json!({ "name": "  " })).send().await.unwrap();
    assert_eq!(assert_problem(empty, 422).await, "name must not be empty");

    let response =
        client.put(&url).bearer_auth(ADMIN_TOKEN).json(&json!({ "name": "Tweed Cap" })).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["consistency-token"], "product/p-004@2");
    let events = published(&service.ctx.bus, 21).await;
    assert_eq!(events[20].kind, super::events::PRODUCT_RENAMED);
    assert_eq!((events[20].payload["name"].as_str(), events[20].version), (Some("Tweed Cap"), 2));
}

#[tokio::test]
async fn a_bad_price_or_product_is_refused_and_changes_nothing() {
    let (service, _dir) = catalog_service().await;
    let client = reqwest::Client::new();
    let put =
        |path: &str, body: Value| client.put(service.url(path)).bearer_auth(ADMIN_TOKEN).json(&body).send();
    let detail =
        assert_problem(put("/products/p-001/price", json!({ "price_cents": 0 })).await.unwrap(), 422).await;
    assert_eq!(detail, "price_cents must be between 1 and 100000000");
    assert_problem(put("/products/p-404/price", json!({ "price_cents": 100 })).await.unwrap(), 404).await;
    assert_problem(put("/products/p-001/price", json!({ "price": 100 })).await.unwrap(), 422).await;
    let product: Value = reqwest::get(service.url("/products/p-001")).await.unwrap().json().await.unwrap();
    assert_eq!(product["version"], 1);
    assert_problem(reqwest::get(service.url("/products/p-404")).await.unwrap(), 404).await;
}

#[tokio::test]
async fn adding_a_product_needs_the_admin_token_and_takes_the_next_number() {
    let (service, _dir) = catalog_service().await;
    let client = reqwest::Client::new();
    let new = json!({ "name": "Visor", "description": "An open-top visor for tennis.", "price_cents": 1399 });
    let response = client.post(service.url("/products")).json(&new).send().await.unwrap();
    assert_problem(response, 401).await;
    let response =
        client.post(service.url("/products")).bearer_auth(ADMIN_TOKEN).json(&new).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["consistency-token"], "product/p-021@1");
    let taken = json!({ "id": "p-001", "name": "Cap", "description": "Another cap.", "price_cents": 100 });
    let response =
        client.post(service.url("/products")).bearer_auth(ADMIN_TOKEN).json(&taken).send().await.unwrap();
    assert_problem(response, 409).await;
    let events = published(&service.ctx.bus, 21).await;
    assert_eq!((events[20].kind.as_str(), events[20].key.as_str()), (super::events::PRODUCT_ADDED, "p-021"));
}

#[tokio::test]
async fn popular_lists_the_most_quoted_products_unlimited() {
    let (service, _dir) = catalog_service().await;
    for _ in 0..2 {
        quote(&service, json!({ "items": [{ "product_id": "p-017", "quantity": 1 }] })).await;
    }
    quote(&service, json!({ "items": [{ "product_id": "p-009", "quantity": 1 }] })).await;
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], false);
    let ids: Vec<&str> =
        answer["products"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["p-017", "p-009", "p-001", "p-002", "p-003"]);
    assert_eq!(popular(&service).await, answer, "served from the cache");
}

#[tokio::test]
async fn popular_answers_limited_when_the_cache_link_is_cut_and_while_its_breaker_is_open() {
    let (service, _dir) = catalog_service().await;
    assert_eq!(popular(&service).await["limited"], false);
    let link = cache_link(&service.ctx);
    assert_eq!(link.name(), "catalog->cache");
    link.set(Faults { cut_out: true, ..Faults::default() });
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], true);
    assert!(answer["reason"].as_str().unwrap().contains("link catalog->cache is cut"), "{answer}");
    assert_eq!(answer["products"].as_array().unwrap().len(), 5);

    // Three failures in a row open the breaker: healing the link does not help until it probes.
    popular(&service).await;
    popular(&service).await;
    link.heal();
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], true);
    assert!(answer["reason"].as_str().unwrap().contains("circuit cache is open"), "{answer}");
    let metrics = reqwest::get(service.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("breaker=\"cache\""), "{metrics}");
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let (service, _dir) = catalog_service().await;
    let doc: Value = reqwest::get(service.url("/openapi.json")).await.unwrap().json().await.unwrap();
    for path in ["/products", "/products/{id}", "/products/{id}/price", "/quote", "/popular"] {
        assert!(doc["paths"][path].is_object(), "{path} is missing");
    }
}

#[tokio::test]
async fn beyond_the_bulkhead_popular_answers_at_once_limited_with_the_last_ranking_and_no_database_read() {
    let (service, _dir) = catalog_service().await;
    let full = popular(&service).await;
    assert_eq!(full["limited"], false);
    let cache = super::cache::of(&service.ctx);
    // Every fallback slot taken, as by as many slow database reads.
    let _held = cache.bulkhead.try_acquire_many(super::cache::FALLBACK_LIMIT as u32).unwrap();
    cache_link(&service.ctx).set(Faults { cut_out: true, ..Faults::default() });
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], true);
    let reason = answer["reason"].as_str().unwrap();
    assert!(reason.contains("database reads already stand in for it"), "{answer}");
    assert!(reason.contains("showing the last ranking seen"), "{answer}");
    assert_eq!(answer["products"], full["products"], "the last ranking, stale");
    let metrics = reqwest::get(service.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric_line(&metrics, "capshop_popular_limited_total").ends_with(" 1"), "{metrics}");
    assert!(metric_line(&metrics, "capshop_popular_db_fallbacks_total").ends_with(" 0"), "{metrics}");
}

#[tokio::test]
async fn within_the_bulkhead_a_failed_cache_is_stood_in_for_by_the_database_and_counted() {
    let (service, _dir) = catalog_service().await;
    quote(&service, json!({ "items": [{ "product_id": "p-013", "quantity": 1 }] })).await;
    cache_link(&service.ctx).set(Faults { cut_out: true, ..Faults::default() });
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], true);
    assert!(answer["reason"].as_str().unwrap().contains("ranked by the database instead"), "{answer}");
    assert_eq!(answer["products"][0]["id"], "p-013", "the real ranking: {answer}");
    let metrics = reqwest::get(service.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric_line(&metrics, "capshop_popular_db_fallbacks_total").ends_with(" 1"), "{metrics}");
    assert!(metric_line(&metrics, "capshop_popular_limited_total").ends_with(" 0"), "{metrics}");
    assert!(metrics.contains("breaker=\"popular-db\""), "{metrics}");
}

/// The line of `name` in a Prometheus text exposition.
fn metric_line<'a>(metrics: &'a str, name: &str) -> &'a str {
    metrics
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// A catalog served as `capshop serve catalog --cache URL` serves it (SQLite and the
/// embedded bus in `dir`); answers its base URL and what stops it.
async fn catalog_on_cache(
    dir: &std::path::Path,
    cache_url: &str,
) -> (String, tokio_util::sync::CancellationToken) {
    let config = crate::serve::ServeConfig {
        part: crate::service::Part::Service(crate::service::ServiceName::Catalog),
        store_url: format!("sqlite:{}", dir.join("catalog.db").display()),
        bus_url: format!("embedded:{}", dir.join("bus.db").display()),
        peers: std::collections::BTreeMap::new(),
        admin_token: crate::service::testing::ADMIN_TOKEN.into(),
        choices: crate::service::Choices::default(),
        cache_url: Some(cache_url.to_owned()),
        instance_id: "catalog".into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::serve::serve(config, listener, shutdown.clone()));
    crate::service::testing::eventually("the catalog answers", || {
        let health = format!("{base}/health");
        async move { reqwest::get(health).await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    (base, shutdown)
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn metrics_of(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn on_a_real_redis_popular_is_a_miss_then_a_hit_and_the_ranking_lives_in_redis() {
    let Some(redis) = kit::testserver::RedisServer::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (base, shutdown) = catalog_on_cache(dir.path(), &redis.url()).await;
    let first = get_json(format!("{base}/popular")).await;
    assert_eq!(first["limited"], false, "{first}");
    assert_eq!(get_json(format!("{base}/popular")).await, first, "served from Redis");
    let metrics = metrics_of(&base).await;
    assert!(metric_line(&metrics, "capshop_popular_cache_misses_total").ends_with(" 1"), "{metrics}");
    assert!(metric_line(&metrics, "capshop_popular_cache_hits_total").ends_with(" 1"), "{metrics}");
    // The entry is in Redis itself, with a time to live.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let stored: String = redis::cmd("GET").arg("popular").query_async(&mut connection).await.unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored, first["products"]);
    let ttl: i64 = redis::cmd("PTTL").arg("popular").query_async(&mut connection).await.unwrap();
    assert!(ttl > 0, "the ranking expires in Redis (PTTL {ttl})");
    shutdown.cancel();
}

#[tokio::test]
async fn when_redis_is_killed_popular_answers_limited_and_nothing_else_fails_and_after_a_restart_full_again()
{
    let Some(mut redis) = kit::testserver::RedisServer::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (base, shutdown) = catalog_on_cache(dir.path(), &redis.url()).await;
    assert_eq!(get_json(format!("{base}/popular")).await["limited"], false);

    redis.kill();
    // Three failed calls open the cache's breaker; from then on no call waits on Redis.
    for _ in 0..3 {
        let answer = get_json(format!("{base}/popular")).await;
        assert_eq!(answer["limited"], true, "{answer}");
        assert!(answer["reason"].as_str().unwrap().contains("cache is unavailable"), "{answer}");
        assert_eq!(answer["products"].as_array().unwrap().len(), 5, "{answer}");
    }
    let answer = get_json(format!("{base}/popular")).await;
    assert!(answer["reason"].as_str().unwrap().contains("circuit cache is open"), "{answer}");
    // Nothing else needs the cache.
    let products = reqwest::get(format!("{base}/products")).await.unwrap();
    assert_eq!(products.status(), 200);
    let quoted = reqwest::Client::new()
        .post(format!("{base}/quote"))
        .json(&json!({ "items": [{ "product_id": "p-002", "quantity": 1 }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(quoted.status(), 200);

    redis.restart().await;
    // The breaker probes after its open spell; the manager reconnects to the new server.
    let full = crate::service::testing::eventually("popular in full again", || {
        let url = format!("{base}/popular");
        async move { Some(get_json(url).await).filter(|a| a["limited"] == false) }
    })
    .await;
    assert_eq!(full["products"][0]["id"], "p-002", "ranked afresh: {full}");
    shutdown.cancel();
}

#[tokio::test]
async fn with_the_database_fallbacks_breaker_open_popular_answers_at_once_limited_without_a_read() {
    let (service, _dir) = catalog_service().await;
    let cache = super::cache::of(&service.ctx);
    // Three failed stand-in reads in a row, as a struggling database gives.
    for _ in 0..3 {
        let _ = cache.fallback_breaker.call(async { Err::<(), _>("the database is struggling") }).await;
    }
    cache_link(&service.ctx).set(Faults { cut_out: true, ..Faults::default() });
    let answer = popular(&service).await;
    assert_eq!(answer["limited"], true);
    let reason = answer["reason"].as_str().unwrap();
    assert!(reason.contains("circuit popular-db is open"), "{answer}");
    assert!(reason.contains("showing no ranking"), "nothing was ranked yet: {answer}");
    assert_eq!(answer["products"], json!([]));
    let metrics = reqwest::get(service.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric_line(&metrics, "capshop_popular_db_fallbacks_total").ends_with(" 0"), "{metrics}");
    assert!(metric_line(&metrics, "capshop_popular_limited_total").ends_with(" 1"), "{metrics}");
}
