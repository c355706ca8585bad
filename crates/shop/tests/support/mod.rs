//! What the shop's end-to-end tests share: starting the whole shop in this process on
//! free ports, talking to it through the gateway, and the scenarios run on more than one
//! store backend.

#![allow(dead_code)] // each test binary uses its own part.

use std::path::Path;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::launch::{Shop, ShopConfig, StoreLocation, launch};
use shop::service::Choices;

pub const TOKEN: &str = "e2e-admin-token";

/// Where a test reaches the shop: its gateway, whether the shop runs in the test's process
/// or as processes of its own (`crates/capshop/tests/distributed.rs` uses this module too).
pub trait Gateway {
    fn url(&self, path: &str) -> String;
}

impl Gateway for Shop {
    fn url(&self, path: &str) -> String {
        Shop::url(self, path)
    }
}

/// The shop with a SQLite file per service in `dir`.
pub async fn spawn_shop(dir: &Path) -> Shop {
    spawn_shop_on(dir, StoreLocation::Sqlite).await
}

/// The shop with its bus in `dir` and its service databases where `stores` says.
pub async fn spawn_shop_on(dir: &Path, stores: StoreLocation) -> Shop {
    let config = ShopConfig {
        data_dir: dir.to_owned(),
        gateway: "127.0.0.1:0".parse().unwrap(),
        admin_token: TOKEN.into(),
        choices: Choices::default(),
        stores,
        operations: None,
    };
    launch(config).await.expect("the shop starts")
}

pub use shop::service::testing::{DeadLetters, eventually};

/// Ends a test of the whole shop: checks that every part's outbox is relayed and that no
/// consumer has a dead letter (unless `dead_letters` says the test made some), then stops
/// the shop.
pub async fn finish_with(shop: Shop, dead_letters: DeadLetters) {
    let parts: Vec<&shop::service::Context> = shop.parts.values().map(AsRef::as_ref).collect();
    shop::service::testing::assert_nothing_left(&parts, dead_letters).await;
    shop.stop().await.expect("the shop stops cleanly");
}

/// [`finish_with`] for a test that makes no dead letters.
pub async fn finish(shop: Shop) {
    finish_with(shop, DeadLetters::Forbidden).await;
}

/// The password of the seeded customers, and of the ones the tests register.
pub const PASSWORD: &str = shop::customer::DEMO_PASSWORD;

/// Signs `email` in with [`PASSWORD`]: the session token.
pub async fn sign_in(shop: &impl Gateway, email: &str) -> String {
    let body = json!({ "email": email, "password": PASSWORD });
    let response = Client::new().post(shop.url("/api/customer/sessions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{email} signs in");
    let answer: Value = response.json().await.unwrap();
    answer["token"].as_str().unwrap().to_owned()
}

/// The sessions the tests hold, as a shop's clients would: each customer's token per shop
/// (signed in on first use), and whose each placed order is (ids are unique everywhere), so that every request carries the
/// token of the customer whose resource it names.
#[derive(Default)]
struct Book {
    emails: std::collections::HashMap<String, String>,
    tokens: std::collections::HashMap<String, String>,
    orders: std::collections::HashMap<String, String>,
}

static BOOK: std::sync::LazyLock<std::sync::Mutex<Book>> = std::sync::LazyLock::new(Default::default);

/// The customer whose resource `path` (or `body`) names: a `c-...` segment or parameter,
/// the `customer_id` of the body, or the customer who placed the `o-...` order it names.
fn owner_named(path: &str, body: &Value) -> Option<String> {
    let words: Vec<&str> = path.split(['/', '?', '&', '=']).collect();
    if let Some(customer) = words.iter().find(|w| w.starts_with("c-")) {
        return Some((*customer).to_owned());
    }
    if let Some(customer) = body["customer_id"].as_str() {
        return Some(customer.to_owned());
    }
    let book = BOOK.lock().unwrap();
    words.iter().find(|w| w.starts_with("o-")).and_then(|o| book.orders.get(*o).cloned())
}

/// The token of `customer` at `shop`, signing them in on first use.
pub async fn session(shop: &impl Gateway, customer: &str) -> String {
    let key = format!("{}{customer}", shop.url(""));
    let email = {
        let book = BOOK.lock().unwrap();
        if let Some(token) = book.tokens.get(&key) {
            return token.clone();
        }
        book.emails.get(customer).cloned().unwrap_or_else(|| format!("{}@example.com", &customer[2..]))
    };
    let token = sign_in(shop, &email).await;
    BOOK.lock().unwrap().tokens.insert(key, token.clone());
    token
}

/// `request` to `path` with `body`, signed in as the customer it concerns (if any).
pub async fn signed_in(
    shop: &impl Gateway,
    path: &str,
    body: &Value,
    request: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    match owner_named(path, body) {
        Some(customer) => request.bearer_auth(session(shop, &customer).await),
        None => request,
    }
}

/// A GET with the admin token (listing every customer is the operator's).
pub async fn get_admin(shop: &impl Gateway, path: &str) -> (StatusCode, Value) {
    let response = Client::new().get(shop.url(path)).bearer_auth(TOKEN).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

/// Sends a request signed in as the customer it concerns (none for public routes), and
/// remembers the customers it registers and the orders it places.
pub async fn send(
    shop: &impl Gateway,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let request = Client::new().request(method.clone(), shop.url(path));
    let mut request = signed_in(shop, path, &body, request).await;
    if method != reqwest::Method::GET {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let answer = response.json().await.unwrap_or(Value::Null);
    if status.is_success() && method == reqwest::Method::POST {
        let mut book = BOOK.lock().unwrap();
        if path == "/api/customer/customers" {
            let key = answer["id"].as_str().unwrap_or_default().to_owned();
            book.emails.insert(key, body["email"].as_str().unwrap_or_default().to_owned());
        } else if path == "/api/order/orders" {
            drop(book);
            remember_order(&answer);
        }
    }
    (status, answer)
}

/// Notes whose `order` (an order as answered) is, for an order placed without [`send`].
pub fn remember_order(order: &Value) {
    let (id, customer) =
        (order["id"].as_str().unwrap_or_default(), order["customer_id"].as_str().unwrap_or_default());
    BOOK.lock().unwrap().orders.insert(id.to_owned(), customer.to_owned());
}

pub async fn get(shop: &impl Gateway, path: &str) -> (StatusCode, Value) {
    send(shop, reqwest::Method::GET, path, Value::Null).await
}

pub async fn post(shop: &impl Gateway, path: &str, body: Value) -> (StatusCode, Value) {
    send(shop, reqwest::Method::POST, path, body).await
}

/// Waits until the order service's replica knows the seeded customers and products.
pub async fn replicated(shop: &impl Gateway) {
    eventually("the seed to replicate", || async {
        let (status, cart) =
            post(shop, "/api/order/carts/c-ada/items", json!({ "product_id": "p-001", "quantity": 1 })).await;
        (status == 200 && cart.as_array().is_some_and(|c| !c.is_empty())).then_some(())
    })
    .await;
    send(shop, reqwest::Method::DELETE, "/api/order/carts/c-ada/items/p-001", Value::Null).await;
    eventually("customer replica", || async {
        let (_, checkout) = get(shop, "/api/order/checkout/c-bob").await;
        (checkout["address_source"]["source"] == "replica").then_some(())
    })
    .await;
}

pub async fn order_status(shop: &impl Gateway, id: &str, wanted: &str) -> Value {
    eventually(&format!("order {id} to be {wanted}"), || async {
        let (_, order) = get(shop, &format!("/api/order/orders/{id}")).await;
        (order["status"] == wanted).then_some(order)
    })
    .await
}

pub async fn shipment(shop: &impl Gateway, order_id: &str, wanted: &str) -> Value {
    eventually(&format!("the shipment of {order_id} to be {wanted}"), || async {
        let (_, shipments) = get(shop, &format!("/api/shipping/shipments?order_id={order_id}")).await;
        shipments.as_array().and_then(|s| s.first()).filter(|s| s["status"] == wanted).cloned()
    })
    .await
}

pub async fn orders_of(shop: &impl Gateway, customer: &str) -> Vec<Value> {
    get(shop, &format!("/api/order/orders?customer_id={customer}"))
        .await
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The happy path: a new customer moves, checks out with the consistency token of the
/// move and sees the new address, orders, and the order is confirmed and shipped there.
pub async fn registers_moves_checks_out_and_ships(shop: &impl Gateway) {
    let address =
        json!({ "line1": "1 Main St", "city": "Springfield", "postcode": "12345", "country": "US" });
    let registration = json!({ "name": "Dee", "email": "dee@example.com", "address": address, "payment_method": { "kind": "card", "last4": "1111" }, "password": PASSWORD });
    let (status, customer) = post(shop, "/api/customer/customers", registration).await;
    assert_eq!(status, 201, "{customer}");
    let id = customer["id"].as_str().unwrap().to_owned();

    let moved = json!({ "line1": "9 Elm St", "city": "Shelbyville", "postcode": "54321", "country": "US" });
    let response = Client::new()
        .put(shop.url(&format!("/api/customer/customers/{id}/address")))
        .bearer_auth(session(shop, &id).await)
        .json(&moved)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token = response.headers()["consistency-token"].to_str().unwrap().to_owned();
    assert_eq!(token, format!("customer/{id}@2"));

    let (status, _) =
        post(shop, &format!("/api/order/carts/{id}/items"), json!({ "product_id": "p-002", "quantity": 2 }))
            .await;
    assert_eq!(status, 200);
    let checkout: Value = Client::new()
        .get(shop.url(&format!("/api/order/checkout/{id}")))
        .bearer_auth(session(shop, &id).await)
        .header("Consistency-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checkout["address"]["city"], "Shelbyville", "read-your-writes: {checkout}");
    assert_eq!(checkout["address_source"]["stale"], false);
    assert_eq!(checkout["total"]["confirmed"], true);

    let (status, order) = post(shop, "/api/order/orders", json!({ "customer_id": id })).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["address"]["city"], "Shelbyville");
    order_status(shop, &order_id, "confirmed").await;
    let (_, reservations) = get(shop, &format!("/api/inventory/reservations?order_id={order_id}")).await;
    assert!(!reservations.as_array().unwrap().is_empty(), "stock reserved: {reservations}");
    let shipped = shipment(shop, &order_id, "shipped").await;
    assert_eq!(shipped["address"]["city"], "Shelbyville");
}
