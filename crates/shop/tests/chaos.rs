//! End-to-end: faults on purpose through the gateway's `/admin/chaos` routes — links cut
//! and healed, services stopped and started again — on a shop started in this process.

use std::path::Path;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::launch::{Shop, ShopConfig, launch};
use shop::service::testing::eventually;
use shop::service::{Choices, Part, ServiceName};

const TOKEN: &str = "chaos-admin-token";

async fn spawn_shop(dir: &Path) -> Shop {
    launch(ShopConfig::ephemeral(dir, TOKEN, Choices::default())).await.expect("the shop starts")
}

async fn get(shop: &Shop, path: &str) -> (StatusCode, Value) {
    let response = Client::new().get(shop.url(path)).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

/// Sends an admin request with `token` (none when `None`).
async fn admin_as(shop: &Shop, token: Option<&str>, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = shop.url(&format!("/admin/chaos{path}"));
    let mut request = match body {
        Some(body) => Client::new().post(url).json(&body),
        None => Client::new().get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

async fn admin(shop: &Shop, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    admin_as(shop, Some(TOKEN), path, body).await
}

fn link<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["links"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap()
}

fn state<'a>(status: &'a Value, service: &str) -> &'a Value {
    &status["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap()["state"]
}

#[tokio::test]
async fn status_lists_every_link_with_its_faults_and_every_service_running_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (status, body) = admin(&shop, "", None).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> =
        body["links"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    for wanted in ["order->customer", "order->catalog", "order->payment", "search->bus", "catalog->cache"] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    for wanted in [
        "inventory-dc1->bus",
        "inventory-dc2->bus",
        "inventory-dc1->inventory-dc2",
        "inventory-dc2->inventory-dc1",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    // Calls, six services and two sites to the bus, the sites to each other, the cache.
    assert_eq!(names.len(), 3 + 6 + 2 + 2 + 1);
    let (_, openapi) = get(&shop, "/openapi.json").await;
    for path in ["/admin/chaos", "/admin/chaos/cut", "/admin/chaos/services/{service}/stop"] {
        assert!(openapi["paths"][path].is_object(), "the gateway documents {path}");
    }
    assert_eq!(link(&body, "order->customer")["cut_out"], false);
    for part in Part::all() {
        assert_eq!(state(&body, &part.name()), "running");
    }
    shop.stop().await.unwrap();
}

/// The dashboard's picture of the embedded shop: every part (stoppable), the bus and the
/// cache, and every chaos link with the gateway's own chaos route and its faults.
#[tokio::test]
async fn the_topology_shows_every_part_the_bus_and_the_cache_and_each_link_with_its_faults_and_route() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    shop.chaos.cut("order", "customer", true).unwrap();
    let response = Client::new().get(shop.url("/admin/topology")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let topology: Value = response.json().await.unwrap();
    assert_eq!(topology["mode"], "embedded");
    let nodes = topology["nodes"].as_array().unwrap();
    let node = |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap_or_else(|| panic!("{topology}"));
    for part in Part::all() {
        let (kind, name) =
            (if part.name().starts_with("inventory-") { "site" } else { "service" }, part.name());
        assert_eq!(
            (&node(&name)["kind"], &node(&name)["state"]),
            (&json!(kind), &json!("running")),
            "{name}"
        );
        assert_eq!(node(&name)["stoppable"], true);
    }
    assert_eq!(node("bus")["kind"], "bus");
    assert_eq!(node("cache")["kind"], "cache");
    let (_, status) = admin(&shop, "", None).await;
    let links = topology["links"].as_array().unwrap();
    assert_eq!(links.len(), status["links"].as_array().unwrap().len(), "every chaos link, once");
    let cut = links.iter().find(|l| l["name"] == "order->customer").unwrap();
    assert_eq!(
        (&cut["cut_out"], &cut["cut_in"], &cut["control"]),
        (&json!(true), &json!(false), &json!("/admin/chaos"))
    );
    assert!(topology["attachments"].as_array().unwrap().is_empty(), "no database drawn in the embedded mode");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_one_way_cut_fails_only_its_direction_and_heal_removes_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (status, body) =
        admin(&shop, "/cut", Some(json!({ "a": "bus", "b": "search", "oneway": true }))).await;
    assert_eq!(status, 200, "{body}");
    let search_bus = link(&body, "search->bus");
    assert_eq!((search_bus["cut_out"].clone(), search_bus["cut_in"].clone()), (json!(false), json!(true)));

    admin(&shop, "/cut", Some(json!({ "a": "order", "b": "customer" }))).await;
    admin(&shop, "/latency", Some(json!({ "a": "order", "b": "catalog", "ms": 40 }))).await;
    let (_, body) =
        admin(&shop, "/loss", Some(json!({ "a": "catalog", "b": "order", "fraction": 0.25 }))).await;
    let order_catalog = link(&body, "order->catalog");
    assert_eq!(
        (order_catalog["latency_ms"].clone(), order_catalog["loss"].clone()),
        (json!(40), json!(0.25))
    );
    assert_eq!(link(&body, "order->customer")["cut_in"], true);

    let (_, body) = admin(&shop, "/heal", Some(json!({ "a": "customer", "b": "order" }))).await;
    assert_eq!(link(&body, "order->customer")["cut_out"], false);
    assert_eq!(link(&body, "order->catalog")["latency_ms"], 40, "healing one pair leaves the others");
    let (_, body) = admin(&shop, "/heal", Some(json!({}))).await;
    for l in body["links"].as_array().unwrap() {
        assert_eq!(
            (&l["cut_out"], &l["cut_in"], &l["latency_ms"], &l["loss"]),
            (&json!(false), &json!(false), &json!(0), &json!(0.0)),
            "{l}"
        );
    }
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn faults_inside_the_bus_are_set_on_a_parts_bus_link_one_at_a_time_and_healed() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (status, body) =
        admin(&shop, "/duplicate", Some(json!({ "a": "order", "b": "bus", "fraction": 0.3 }))).await;
    assert_eq!(status, 200, "{body}");
    admin(&shop, "/delay", Some(json!({ "a": "bus", "b": "order", "fraction": 0.5 }))).await;
    let (_, body) =
        admin(&shop, "/lost-ack", Some(json!({ "a": "inventory", "b": "bus", "fraction": 0.2 }))).await;
    let order_bus = link(&body, "order->bus");
    assert_eq!(
        (&order_bus["duplicate"], &order_bus["delay"], &order_bus["lost_ack"]),
        (&json!(0.3), &json!(0.5), &json!(0.0))
    );
    for site in ["inventory-dc1->bus", "inventory-dc2->bus"] {
        assert_eq!(link(&body, site)["lost_ack"], 0.2, "inventory names both sites' bus links");
    }
    assert_eq!(link(&body, "shipping->bus")["duplicate"], 0.0, "other bus links keep no fault");

    let (_, body) =
        admin(&shop, "/duplicate", Some(json!({ "a": "order", "b": "bus", "fraction": 0 }))).await;
    assert_eq!(link(&body, "order->bus")["duplicate"], 0.0, "0 removes the fault");
    assert_eq!(link(&body, "order->bus")["delay"], 0.5, "and leaves the others");
    let (_, body) = admin(&shop, "/heal", Some(json!({}))).await;
    for l in body["links"].as_array().unwrap() {
        assert_eq!(
            (&l["duplicate"], &l["lost_ack"], &l["delay"]),
            (&json!(0.0), &json!(0.0), &json!(0.0)),
            "{l}"
        );
    }
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_stopped_service_neither_serves_nor_consumes_and_resumes_on_its_port_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let search = shop.contexts[&ServiceName::Search].clone();
    let catalog_stream = vec!["catalog".to_owned()];
    let applied = || async {
        kit::lag::measure(&search.store, search.bus.as_ref(), "search.catalog", &catalog_stream)
            .await
            .unwrap()[0]
            .clone()
    };
    eventually("the index to take the seed", || async {
        (applied().await.events_behind() == 0).then_some(())
    })
    .await;

    let (status, body) = admin(&shop, "/services/search/stop", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state(&body, "search"), "stopped");
    let (status, _) = get(&shop, "/api/search/status").await;
    assert_eq!(status, 502, "a stopped service does not serve");

    let product =
        json!({ "name": "Chaos Cap", "description": "Worn while things break.", "price_cents": 1234 });
    let response = Client::new()
        .post(shop.url("/api/catalog/products"))
        .bearer_auth(TOKEN)
        .json(&product)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let head = eventually("the product on the bus", || async {
        let lag = applied().await;
        (lag.published_seq > lag.applied_seq).then_some(lag.published_seq)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(applied().await.applied_seq < head, "a stopped service does not consume");

    let (status, body) = admin(&shop, "/services/search/start", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state(&body, "search"), "running");
    let (_, found) = eventually("the index to catch up after the restart", || async {
        let (status, found) = get(&shop, "/api/search/search?q=Chaos").await;
        (status == 200 && !found["results"].as_array().unwrap().is_empty()).then_some((status, found))
    })
    .await;
    assert_eq!(found["results"][0]["title"], "Chaos Cap", "{found}");
    let (_, documents) = get(&shop, "/api/search/status").await;
    assert_eq!(documents["documents"]["products"], 21, "the index kept what it had: {documents}");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn bad_chaos_requests_get_a_problem_that_says_what_to_do_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (_, before) = admin(&shop, "", None).await;
    let cases: Vec<(Option<&str>, &str, Value, StatusCode, &str)> = vec![
        (None, "/cut", json!({ "a": "order", "b": "customer" }), StatusCode::UNAUTHORIZED, "Bearer"),
        (Some("wrong"), "/cut", json!({ "a": "order", "b": "customer" }), StatusCode::FORBIDDEN, "wrong"),
        (
            Some(TOKEN),
            "/cut",
            json!({ "a": "customer", "b": "payment" }),
            StatusCode::NOT_FOUND,
            "order->customer",
        ),
        (
            Some(TOKEN),
            "/cut",
            json!({ "a": "order", "b": "warehouse" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bus",
        ),
        (
            Some(TOKEN),
            "/loss",
            json!({ "a": "order", "b": "bus", "fraction": 1.5 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "between 0 and 1",
        ),
        (
            Some(TOKEN),
            "/latency",
            json!({ "a": "order", "b": "bus", "ms": 3_600_000 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cut",
        ),
        (
            Some(TOKEN),
            "/delay",
            json!({ "a": "order", "b": "customer", "fraction": 0.3 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "order bus",
        ),
        (
            Some(TOKEN),
            "/duplicate",
            json!({ "a": "order", "b": "bus", "fraction": -0.1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "between 0 and 1",
        ),
        (
            Some(TOKEN),
            "/lost-ack",
            json!({ "a": "warehouse", "b": "bus", "fraction": 0.3 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "inventory-dc1",
        ),
        (Some(TOKEN), "/heal", json!({ "a": "order" }), StatusCode::UNPROCESSABLE_ENTITY, "both ends"),
        (Some(TOKEN), "/cut", json!({ "a": "order" }), StatusCode::UNPROCESSABLE_ENTITY, "b"),
        (Some(TOKEN), "/services/warehouse/stop", json!({}), StatusCode::NOT_FOUND, "customer"),
    ];
    for (token, path, body, expected, hint) in cases {
        let (status, problem) = admin_as(&shop, token, path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(hint), "{path}: the problem says {hint:?}: {problem}");
    }
    let (_, after) = admin(&shop, "", None).await;
    assert_eq!(before, after, "no bad request changed a link or a service");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn each_inventory_site_stops_and_is_cut_on_its_own_and_inventory_names_both_sites() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (status, _) = get(&shop, "/api/inventory-dc2/health").await;
    assert_eq!(status, 200, "the gateway reaches each site by its name");
    let (status, body) = admin(&shop, "/services/inventory-dc2/stop", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&shop, "/api/inventory-dc2/health").await.0, 502, "a stopped site does not serve");
    assert_eq!(get(&shop, "/api/inventory-dc1/health").await.0, 200, "the other site still does");
    assert_eq!(
        (state(&body, "inventory-dc1"), state(&body, "inventory-dc2")),
        (&json!("running"), &json!("stopped"))
    );
    let (_, body) = admin(&shop, "/services/inventory/stop", Some(json!({}))).await;
    assert_eq!(state(&body, "inventory-dc1"), "stopped", "inventory stops both sites");
    let (_, body) = admin(&shop, "/services/inventory/start", Some(json!({}))).await;
    assert_eq!(
        (state(&body, "inventory-dc1"), state(&body, "inventory-dc2")),
        (&json!("running"), &json!("running"))
    );

    let (status, body) =
        admin(&shop, "/cut", Some(json!({ "a": "inventory-dc1", "b": "inventory-dc2" }))).await;
    assert_eq!(status, 200, "{body}");
    for name in ["inventory-dc1->inventory-dc2", "inventory-dc2->inventory-dc1"] {
        assert_eq!(
            (&link(&body, name)["cut_out"], &link(&body, name)["cut_in"]),
            (&json!(true), &json!(true)),
            "{name}"
        );
    }
    assert_eq!(link(&body, "inventory-dc1->bus")["cut_out"], false, "only the links between the sites");
    let (_, body) = admin(&shop, "/cut", Some(json!({ "a": "inventory", "b": "bus" }))).await;
    for name in ["inventory-dc1->bus", "inventory-dc2->bus"] {
        assert_eq!(link(&body, name)["cut_out"], true, "inventory bus cuts {name}");
    }
    let (_, body) = admin(&shop, "/heal", Some(json!({ "a": "inventory-dc2", "b": "inventory-dc1" }))).await;
    assert_eq!(link(&body, "inventory-dc1->inventory-dc2")["cut_in"], false);
    assert_eq!(
        link(&body, "inventory-dc2->bus")["cut_out"],
        true,
        "healing the sites' links leaves the bus cut"
    );

    let (status, problem) = admin(&shop, "/services/inventory-dc3/stop", Some(json!({}))).await;
    assert_eq!(status, 404, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("inventory-dc1") && detail.contains("inventory (both sites)"), "{detail}");
    shop.stop().await.unwrap();
}
