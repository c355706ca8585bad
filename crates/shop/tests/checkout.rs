//! End-to-end: the whole shop started in this process on temporary files and free ports,
//! driven through the gateway like a user would.

mod support;

use std::time::Duration;

use kit::link::Faults;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::service::{Part, ServiceName};
use support::*;

#[tokio::test]
async fn a_registered_customer_changes_address_checks_out_with_the_token_and_gets_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    registers_moves_checks_out_and_ships(&shop).await;
    finish(shop).await;
}

#[tokio::test]
async fn a_parts_recent_events_are_the_newest_of_its_own_stream_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    let change = json!({ "line1": "9 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB" });
    let (status, _) =
        send(&shop, reqwest::Method::PUT, "/api/customer/customers/c-ada/address", change).await;
    assert_eq!(status, 200);
    // The answer comes once the change is committed; the relay puts it on the bus after.
    let (events, head) = shop::service::testing::eventually("the address change on the bus", || async {
        let events: Value = Client::new()
            .get(shop.url("/api/customer/admin/events?limit=2"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let head =
            shop.contexts[&shop::service::ServiceName::Customer].bus.stream_head("customer").await.ok()?;
        (events[0]["kind"] == "CustomerAddressChanged").then_some((events, head))
    })
    .await;
    let events = events.as_array().unwrap_or_else(|| panic!("a list: {events}"));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [head, head - 1], "the two newest, newest first: {events:?}");
    assert!(events.iter().all(|e| e["stream"] == "customer"), "{events:?}");
    assert_eq!((&events[0]["kind"], &events[0]["key"]), (&json!("CustomerAddressChanged"), &json!("c-ada")));
    finish(shop).await;
}

#[tokio::test]
async fn when_the_catalog_is_unreachable_placing_an_order_answers_503_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    post(&shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-003", "quantity": 1 })).await;
    shop.links["order->catalog"].set(Faults { cut_out: true, ..Faults::default() });
    let (_, checkout) = get(&shop, "/api/order/checkout/c-bob").await;
    assert_eq!(checkout["total"]["confirmed"], false, "{checkout}");
    assert_eq!(checkout["address_source"]["source"], "replica", "the address is still served");
    let (status, problem) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("catalog"),
        "the reason names the catalog: {problem}"
    );
    assert!(orders_of(&shop, "c-bob").await.is_empty());
    assert_eq!(shop.contexts[&shop::service::ServiceName::Order].bus.stream_head("order").await.unwrap(), 0);
    finish(shop).await;
}

#[tokio::test]
async fn when_payment_is_unreachable_placing_an_order_answers_503_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    post(&shop, "/api/order/carts/c-cyd/items", json!({ "product_id": "p-004", "quantity": 1 })).await;
    shop.links["order->payment"].set(Faults { cut_out: true, ..Faults::default() });
    let (status, problem) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-cyd" })).await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("payment"), "{problem}");
    assert!(orders_of(&shop, "c-cyd").await.is_empty());
    let (_, cart) = get(&shop, "/api/order/carts/c-cyd").await;
    assert_eq!(cart.as_array().unwrap().len(), 1, "the cart is kept");
    assert_eq!(shop.contexts[&shop::service::ServiceName::Order].bus.stream_head("order").await.unwrap(), 0);
    finish(shop).await;
}

#[tokio::test]
async fn an_overridden_address_holds_the_shipment_until_the_addresses_agree() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    post(&shop, "/api/order/carts/c-ada/items", json!({ "product_id": "p-005", "quantity": 1 })).await;
    let elsewhere =
        json!({ "line1": "221B Baker Street", "city": "London", "postcode": "NW1 6XE", "country": "GB" });
    let (status, order) =
        post(&shop, "/api/order/orders", json!({ "customer_id": "c-ada", "address_override": elsewhere }))
            .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["address_source"], "override");
    let order_id = order["id"].as_str().unwrap().to_owned();
    let held = shipment(&shop, &order_id, "held").await;
    assert!(held["reason"].as_str().unwrap().contains("address"), "{held}");
    let response = Client::new()
        .put(shop.url("/api/customer/customers/c-ada/address"))
        .bearer_auth(session(&shop, "c-ada").await)
        .json(&elsewhere)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let shipped = shipment(&shop, &order_id, "shipped").await;
    assert_eq!(shipped["address"]["line1"], "221B Baker Street");
    finish(shop).await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    // Signed in as Ada: every refusal below is for the input, not the session.
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", session(&shop, "c-ada").await);
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    let client = Client::builder().default_headers(headers).build().unwrap();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode)> = vec![
        (
            client
                .post(shop.url("/api/order/carts/c-ada/items"))
                .header("content-type", "application/json")
                .body("{\"product_id\": "),
            StatusCode::BAD_REQUEST,
        ),
        (
            client
                .post(shop.url("/api/order/carts/c-ada/items"))
                .json(&json!({ "product_id": "p-001", "quantity": -2 })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            client
                .post(shop.url("/api/order/carts/c-ada/items"))
                .json(&json!({ "product_id": "p-999", "quantity": 1 })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            client
                .post(shop.url("/api/order/carts/c-nobody/items"))
                .json(&json!({ "product_id": "p-001", "quantity": 1 })),
            StatusCode::NOT_FOUND,
        ),
        (client.get(shop.url("/api/order/orders/o-unknown")), StatusCode::NOT_FOUND),
        (client.get(shop.url("/api/customer/customers/c-unknown")), StatusCode::NOT_FOUND),
        (
            client
                .put(shop.url("/api/customer/customers/c-ada/address"))
                .header("content-type", "application/json")
                .body(format!("{{\"line1\": \"{}\"}}", "x".repeat(200_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (Client::new().get(shop.url("/api/order/admin/dead-letters")), StatusCode::UNAUTHORIZED),
        (Client::new().get(shop.url("/api/order/admin/events")), StatusCode::UNAUTHORIZED),
        (client.get(shop.url("/api/order/admin/events?limit=0")).bearer_auth(TOKEN), StatusCode::BAD_REQUEST),
        (
            client.get(shop.url("/api/order/admin/events?limit=many")).bearer_auth(TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (Client::new().get(shop.url("/admin/topology")), StatusCode::UNAUTHORIZED),
        (Client::new().get(shop.url("/admin/topology")).bearer_auth("wrong"), StatusCode::FORBIDDEN),
        (
            client.post(shop.url("/api/order/orders")).json(&json!({ "customer_id": "c-ada" })),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{body}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{body}");
        assert!(!body["detail"].as_str().unwrap_or("").is_empty(), "the problem says what is wrong: {body}");
    }
    let (_, cart) = get(&shop, "/api/order/carts/c-ada").await;
    assert_eq!(cart, json!([]), "no bad request changed the cart");
    let (_, ada) = get(&shop, "/api/customer/customers/c-ada").await;
    assert_eq!(ada["version"], 1, "no bad request changed the customer");
    assert!(orders_of(&shop, "c-ada").await.is_empty());
    finish(shop).await;
}

#[tokio::test]
async fn a_restart_keeps_every_order_and_resumes_unfinished_replication() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    post(&shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-006", "quantity": 1 })).await;
    // The order's events cannot leave its outbox before the restart.
    shop.links["order->bus"].set(Faults { cut_out: true, ..Faults::default() });
    let (status, order) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&shop, &format!("/api/order/orders/{order_id}")).await.1["status"], "pending_stock");
    shop.stop().await.unwrap();

    let shop = spawn_shop(dir.path()).await;
    let (status, kept) = get(&shop, &format!("/api/order/orders/{order_id}")).await;
    assert_eq!(status, 200, "the order survived the restart");
    assert_eq!(kept["id"], order_id.as_str());
    order_status(&shop, &order_id, "confirmed").await;
    shipment(&shop, &order_id, "shipped").await;
    let (_, customers) = get_admin(&shop, "/api/customer/customers").await;
    assert_eq!(customers.as_array().unwrap().len(), 3, "the seed is not repeated");
    finish(shop).await;
}

#[tokio::test]
async fn an_order_waiting_for_its_stock_can_be_cancelled_a_confirmed_one_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;

    // With both inventory sites stopped the order waits for its stock.
    for site in Part::of(ServiceName::Inventory) {
        shop.chaos.stop(site).await.unwrap();
    }
    post(&shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-002", "quantity": 1 })).await;
    let (status, waiting) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 201, "{waiting}");
    assert_eq!(waiting["status"], "pending_stock");
    let id = waiting["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = post(&shop, &format!("/api/order/orders/{id}/cancel"), Value::Null).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    for site in Part::of(ServiceName::Inventory) {
        shop.chaos.start(site).await.unwrap();
    }

    post(&shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-002", "quantity": 1 })).await;
    let (status, placed) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().unwrap().to_owned();
    let confirmed = order_status(&shop, &id, "confirmed").await;
    let (status, problem) = post(&shop, &format!("/api/order/orders/{id}/cancel"), Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("can no longer be cancelled"), "{problem}");
    let (_, after) = get(&shop, &format!("/api/order/orders/{id}")).await;
    assert_eq!(after, confirmed, "a refused cancel changes nothing");
    shipment(&shop, &id, "shipped").await;
    finish(shop).await;
}
