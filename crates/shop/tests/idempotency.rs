//! Retried creates through the gateway: the same Idempotency-Key answers the first answer
//! again and never makes a second order or customer, also when the retries race.

mod support;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use support::*;

async fn post_with_key(shop: &impl Gateway, path: &str, key: &str, body: &Value) -> Response {
    let request = Client::new().post(shop.url(path)).header("Idempotency-Key", key).json(body);
    signed_in(shop, path, body, request).await.send().await.unwrap()
}

async fn answer(response: Response) -> (StatusCode, bool, Value) {
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (response.status(), replayed, response.json().await.unwrap())
}

async fn fill_cart(shop: &impl Gateway, customer: &str) {
    let (status, cart) = post(
        shop,
        &format!("/api/order/carts/{customer}/items"),
        json!({ "product_id": "p-002", "quantity": 1 }),
    )
    .await;
    assert_eq!(status, 200, "{cart}");
}

#[tokio::test]
async fn an_order_sent_again_with_its_idempotency_key_answers_the_first_answer_and_places_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    fill_cart(&shop, "c-ada").await;
    let body = json!({ "customer_id": "c-ada" });
    let (status, replayed, first) =
        answer(post_with_key(&shop, "/api/order/orders", "retry-1", &body).await).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{first}");

    // The client timed out and sends it again; the cart is empty by now, so only the key
    // can answer this one as placed.
    let (status, replayed, again) =
        answer(post_with_key(&shop, "/api/order/orders", "retry-1", &body).await).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "{again}");
    assert_eq!(again, first, "the same body, consistency token included");
    assert_eq!(orders_of(&shop, "c-ada").await.len(), 1);

    // The same key with another request is refused and changes nothing.
    let other = json!({ "customer_id": "c-bob" });
    let (status, _, problem) =
        answer(post_with_key(&shop, "/api/order/orders", "retry-1", &other).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"), "{problem}");
    assert!(orders_of(&shop, "c-bob").await.is_empty());
    remember_order(&first);
    order_status(&shop, first["id"].as_str().unwrap(), "confirmed").await;
    finish(shop).await;
}

#[tokio::test]
async fn racing_retries_of_one_order_place_it_once_and_all_get_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    fill_cart(&shop, "c-cyd").await;
    let body = json!({ "customer_id": "c-cyd" });
    let sends = (0..6).map(|_| post_with_key(&shop, "/api/order/orders", "race-1", &body));
    let answers = futures_util::future::join_all(sends).await;
    let mut bodies = Vec::new();
    for response in answers {
        let (status, _, body) = answer(response).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every racer got the one answer: {bodies:#?}");
    assert_eq!(orders_of(&shop, "c-cyd").await.len(), 1);
    finish(shop).await;
}

#[tokio::test]
async fn a_failed_order_releases_its_key_so_the_retry_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    let body = json!({ "customer_id": "c-bob" });
    let (status, _, problem) =
        answer(post_with_key(&shop, "/api/order/orders", "empty-1", &body).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "an empty cart: {problem}");
    fill_cart(&shop, "c-bob").await;
    let (status, replayed, order) =
        answer(post_with_key(&shop, "/api/order/orders", "empty-1", &body).await).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{order}");
    assert_eq!(orders_of(&shop, "c-bob").await.len(), 1);
    finish(shop).await;
}

#[tokio::test]
async fn a_registration_sent_again_with_its_key_registers_one_customer_and_a_bad_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let address =
        json!({ "line1": "1 Main St", "city": "Springfield", "postcode": "12345", "country": "US" });
    let body = json!({ "name": "Eve", "email": "eve@example.com", "address": address,
                       "payment_method": { "kind": "invoice" }, "password": PASSWORD });
    let (status, _, first) =
        answer(post_with_key(&shop, "/api/customer/customers", "signup-1", &body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, replayed, again) =
        answer(post_with_key(&shop, "/api/customer/customers", "signup-1", &body).await).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true), "not 409 'email taken': {again}");
    assert_eq!(again, first);

    let (status, _, problem) =
        answer(post_with_key(&shop, "/api/customer/customers", "a key with spaces", &body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (_, customers) = get_admin(&shop, "/api/customer/customers").await;
    let eves = customers.as_array().unwrap().iter().filter(|c| c["email"] == "eve@example.com").count();
    assert_eq!(eves, 1);
    finish(shop).await;
}
