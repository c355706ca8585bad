//! End-to-end on PostgreSQL: the whole shop with every service on a database of its own
//! on one PostgreSQL server (and the embedded bus), driven through the gateway.

mod support;

use kit::testserver::PgServer;
use shop::launch::StoreLocation;
use support::*;

#[tokio::test]
async fn on_postgres_a_customer_moves_checks_out_gets_shipped_and_products_are_found() {
    let Some(server) = PgServer::start() else { return };
    for part in StoreLocation::parts() {
        server.create_database(&StoreLocation::database(&part));
    }
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop_on(dir.path(), StoreLocation::Postgres { base_url: server.base_url() }).await;
    for part in StoreLocation::parts() {
        assert!(!dir.path().join(format!("{part}.db")).exists(), "{part} opened a SQLite file");
    }

    replicated(&shop).await;
    registers_moves_checks_out_and_ships(&shop).await;
    let orders = kit::store::Store::open(&server.url("capshop_order"), &[]).await.unwrap();
    let placed = orders.transact(|tx| tx.query_one("SELECT count(*) FROM orders", &[])).await.unwrap();
    assert_eq!(placed.get::<i64>(0).unwrap(), 1, "the order is in the order service's database");

    // Adding to a cart line that exists sums the quantities, capped at 100 per line.
    let line = |quantity: u32| serde_json::json!({ "product_id": "p-003", "quantity": quantity });
    post(&shop, "/api/order/carts/c-bob/items", line(60)).await;
    let (_, cart) = post(&shop, "/api/order/carts/c-bob/items", line(30)).await;
    assert_eq!(cart[0]["quantity"], 90, "{cart}");
    let (_, cart) = post(&shop, "/api/order/carts/c-bob/items", line(30)).await;
    assert_eq!(cart[0]["quantity"], 100, "{cart}");

    let found = eventually("the search index to hold the catalog", || async {
        let (_, answer) = get(&shop, "/api/search/search?q=baseball+cap").await;
        answer["results"].as_array().filter(|hits| !hits.is_empty()).cloned()
    })
    .await;
    assert_eq!(found[0]["id"], "p-001", "{found:?}");
    assert_eq!(found[0]["title"], "Classic Baseball Cap");
    assert!(found[0]["snippet"].as_str().unwrap().contains("[Baseball]"), "{:?}", found[0]);
    assert!(found[0]["score"].as_f64().unwrap() > 0.0);
    let (status, _) = get(&shop, "/api/search/search?q=baseball&kind=order").await;
    assert_eq!(status, 401, "orders are searched signed in");
    let none: serde_json::Value = reqwest::Client::new()
        .get(shop.url("/api/search/search?q=baseball&kind=order"))
        .bearer_auth(session(&shop, "c-ada").await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["results"], serde_json::json!([]), "{none}");

    // An order retried with its Idempotency-Key is placed once on PostgreSQL too.
    let place = || async {
        let response = reqwest::Client::new()
            .post(shop.url("/api/order/orders"))
            .bearer_auth(session(&shop, "c-bob").await)
            .header("Idempotency-Key", "pg-retry-1")
            .json(&serde_json::json!({ "customer_id": "c-bob" }))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<serde_json::Value>().await.unwrap())
    };
    let (first, again) = (place().await, place().await);
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(again, first, "the retry answers the first answer");
    assert_eq!(orders_of(&shop, "c-bob").await.len(), 1);
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_frozen_postgres_gets_every_request_a_503_instead_of_a_hang_and_the_shop_converges_after() {
    let Some(server) = PgServer::start() else { return };
    for part in StoreLocation::parts() {
        server.create_database(&StoreLocation::database(&part));
    }
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop_on(dir.path(), StoreLocation::Postgres { base_url: server.base_url() }).await;
    replicated(&shop).await;

    // Signed in before: signing in needs the customer database.
    let tokens = [session(&shop, "c-ada").await, session(&shop, "c-bob").await];
    // Every server process stopped (SIGSTOP): connections stay open and nothing answers,
    // as on a hung machine. The store's own call bound (5 s) must turn that into 503s.
    server.stop();
    // A safety net against a hang, far above the bound; not a measurement.
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap();
    let requests = [
        ("GET", "/api/order/orders?customer_id=c-ada", &tokens[0]),
        ("GET", "/api/customer/customers/c-bob", &tokens[1]),
        ("GET", "/api/catalog/products", &tokens[0]),
        ("POST", "/api/order/carts/c-ada/items", &tokens[0]),
    ];
    let answers = futures_util::future::join_all(requests.iter().map(|(method, path, token)| {
        let request = match *method {
            "POST" => {
                client.post(shop.url(path)).json(&serde_json::json!({ "product_id": "p-001", "quantity": 1 }))
            }
            _ => client.get(shop.url(path)),
        };
        let request = request.bearer_auth(token);
        async move { (path, request.send().await) }
    }))
    .await;
    server.cont();
    for (path, answer) in answers {
        let answer = answer.unwrap_or_else(|e| panic!("{path} hung instead of answering: {e}"));
        assert_eq!(answer.status(), 503, "{path} answers 503 while its database does not answer");
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("unavailable"), "{path}: {problem}");
    }

    // Thawed: the shop works again, and nothing was dead-lettered on the way.
    registers_moves_checks_out_and_ships(&shop).await;
    finish(shop).await;
}
