//! Signing in, and who may see what: the ownership matrix over every customer-scoped route
//! (another customer's token → 404, none → 401), tokens verified while the customer
//! service is stopped, revocation by event, and no answer that shows a password hash or
//! another customer's data.

mod support;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use shop::service::{Part, ServiceName};
use support::*;

/// Bob's data that no answer to Ada (or to nobody) may contain.
const BOBS: [&str; 3] = ["bob@example.com", "1 Infinite Loop", "Bob Kahn"];

async fn call(
    shop: &impl Gateway,
    method: Method,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = Client::new().request(method, shop.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

/// Bob with an order placed and shipped, and both sessions.
async fn ada_and_bob(shop: &impl Gateway) -> (String, String, String) {
    replicated(shop).await;
    let (status, _) =
        post(shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-003", "quantity": 1 })).await;
    assert_eq!(status, 200);
    let (status, order) = post(shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 201, "{order}");
    let order = order["id"].as_str().unwrap().to_owned();
    shipment(shop, &order, "shipped").await;
    (session(shop, "c-ada").await, session(shop, "c-bob").await, order)
}

#[tokio::test]
async fn every_customer_scoped_route_refuses_another_customers_token_with_404_and_no_token_with_401() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (ada, bob, order) = ada_and_bob(&shop).await;
    let address = json!({ "line1": "1 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB" });
    let item = json!({ "product_id": "p-001", "quantity": 1 });
    let routes: Vec<(Method, String, Value)> = vec![
        (Method::GET, "/api/customer/customers/c-bob".into(), Value::Null),
        (Method::PUT, "/api/customer/customers/c-bob/address".into(), address),
        (Method::PUT, "/api/customer/customers/c-bob/payment-method".into(), json!({ "kind": "invoice" })),
        (
            Method::PUT,
            "/api/customer/customers/c-bob/password".into(),
            json!({ "current_password": PASSWORD, "new_password": "stolen-123" }),
        ),
        (Method::GET, "/api/order/carts/c-bob".into(), Value::Null),
        (Method::POST, "/api/order/carts/c-bob/items".into(), item),
        (Method::DELETE, "/api/order/carts/c-bob/items/p-003".into(), Value::Null),
        (Method::GET, "/api/order/checkout/c-bob".into(), Value::Null),
        (Method::POST, "/api/order/orders".into(), json!({ "customer_id": "c-bob" })),
        (Method::GET, "/api/order/orders?customer_id=c-bob".into(), Value::Null),
        (Method::GET, format!("/api/order/orders/{order}"), Value::Null),
        (Method::POST, format!("/api/order/orders/{order}/confirm-address"), Value::Null),
        (Method::POST, format!("/api/order/orders/{order}/cancel"), Value::Null),
        (Method::GET, format!("/api/shipping/shipments/{order}"), Value::Null),
    ];
    for (method, path, body) in &routes {
        let (status, _, answer) = call(&shop, method.clone(), path, body, Some(&ada)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} with Ada's token: {answer}");
        let (status, headers, answer) = call(&shop, method.clone(), path, body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} without a token: {answer}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"), "{method} {path}");
        let (status, _, answer) = call(&shop, method.clone(), path, body, Some("v4.public.forged")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with a forged token: {answer}");
        let (status, _, answer) = call(&shop, method.clone(), path, body, Some(TOKEN)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the admin token is no customer's: {method} {path}: {answer}"
        );
    }
    // Lists answer only the signed-in customer's own, and search finds only one's own orders.
    for path in [
        "/api/shipping/shipments".to_owned(),
        format!("/api/shipping/shipments?order_id={order}"),
        format!("/api/search?q={order}"),
    ] {
        // What was found (a search answer also repeats the query).
        let found = |answer: &str| {
            let answer: Value = serde_json::from_str(answer).unwrap();
            answer.get("results").unwrap_or(&answer).to_string()
        };
        let (status, _, answer) = call(&shop, Method::GET, &path, &Value::Null, Some(&ada)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(!found(&answer).contains(&order), "{path} shows Ada none of Bob's: {answer}");
        let what = format!("{path} to show Bob his own");
        eventually(&what, || async {
            let (_, _, own) = call(&shop, Method::GET, &path, &Value::Null, Some(&bob)).await;
            found(&own).contains(&order).then_some(())
        })
        .await;
    }
    let (status, _, _) = call(&shop, Method::GET, "/api/customer/customers", &Value::Null, Some(&ada)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "listing every customer is the operator's");
    // Bob's own token still works, and nothing of his changed.
    let (status, _, me) =
        call(&shop, Method::GET, "/api/customer/customers/c-bob", &Value::Null, Some(&bob)).await;
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["version"], 1, "no refused request changed Bob: {me}");
    let (_, _, mine) =
        call(&shop, Method::GET, &format!("/api/order/orders/{order}"), &Value::Null, Some(&bob)).await;
    assert!(mine.contains("\"confirmed\""), "{mine}");
    finish(shop).await;
}

#[tokio::test]
async fn no_answer_shows_a_password_hash_or_another_customers_data() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (ada, _, order) = ada_and_bob(&shop).await;
    let address = json!({ "line1": "3 New St", "city": "York", "postcode": "YO1 7HH", "country": "GB" });
    let registration = json!({ "name": "Fay", "email": "fay@example.com", "address": address,
                               "payment_method": { "kind": "invoice" }, "password": "fays-secret-1" });
    let (status, _, registered) =
        call(&shop, Method::POST, "/api/customer/customers", &registration, None).await;
    assert_eq!(status, 201);
    let signed_in = json!({ "email": "fay@example.com", "password": "fays-secret-1" });
    let (status, _, session) = call(&shop, Method::POST, "/api/customer/sessions", &signed_in, None).await;
    assert_eq!(status, 201, "{session}");
    let answers = [
        registered,
        session,
        call(&shop, Method::GET, "/api/customer/customers/c-ada", &Value::Null, Some(&ada)).await.2,
        call(&shop, Method::GET, "/api/order/checkout/c-ada", &Value::Null, Some(&ada)).await.2,
        call(&shop, Method::GET, "/api/order/orders?customer_id=c-ada", &Value::Null, Some(&ada)).await.2,
        call(&shop, Method::GET, &format!("/api/search?q={order}"), &Value::Null, Some(&ada)).await.2,
        call(&shop, Method::GET, "/api/search?q=bob", &Value::Null, None).await.2,
        get_admin(&shop, "/api/customer/customers").await.1.to_string(),
    ];
    for answer in &answers {
        assert!(
            !answer.contains("argon2") && !answer.contains("fays-secret-1"),
            "a hash or password shown: {answer}"
        );
    }
    for answer in &answers[..7] {
        for bobs in BOBS {
            assert!(!answer.contains(bobs), "Bob's {bobs} shown to another: {answer}");
        }
    }
    finish(shop).await;
}

#[tokio::test]
async fn a_wrong_password_or_unknown_email_is_a_401_that_does_not_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let mut details = Vec::new();
    for (email, password) in [
        ("ada@example.com", "not-her-password"),
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", "short"),
    ] {
        let body = json!({ "email": email, "password": password });
        let (status, headers, answer) =
            call(&shop, Method::POST, "/api/customer/sessions", &body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert!(headers.contains_key("www-authenticate"));
        details.push(serde_json::from_str::<Value>(&answer).unwrap()["detail"].clone());
    }
    assert!(details.iter().all(|d| *d == details[0]), "{details:?}");
    let body = json!({ "email": "ADA@example.com ", "password": PASSWORD });
    let (status, _, answer) = call(&shop, Method::POST, "/api/customer/sessions", &body, None).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["customer_id"], "c-ada");
    assert!(answer["token"].as_str().unwrap().starts_with("v4.public."));
    finish(shop).await;
}

#[tokio::test]
async fn a_signed_in_shopper_checks_out_and_is_shipped_to_while_the_customer_service_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let (_, bob, _) = ada_and_bob(&shop).await;
    shop.chaos.stop(Part::Service(ServiceName::Customer)).await.unwrap();
    let item = json!({ "product_id": "p-004", "quantity": 1 });
    let (status, _, cart) =
        call(&shop, Method::POST, "/api/order/carts/c-bob/items", &item, Some(&bob)).await;
    assert_eq!(status, 200, "{cart}");
    let (status, _, checkout) =
        call(&shop, Method::GET, "/api/order/checkout/c-bob", &Value::Null, Some(&bob)).await;
    assert_eq!(status, 200, "{checkout}");
    let order = json!({ "customer_id": "c-bob" });
    let (status, _, placed) = call(&shop, Method::POST, "/api/order/orders", &order, Some(&bob)).await;
    assert_eq!(status, 201, "{placed}");
    let placed: Value = serde_json::from_str(&placed).unwrap();
    let id = placed["id"].as_str().unwrap().to_owned();
    let shipped = eventually("the shipment while customer is stopped", || async {
        let path = format!("/api/shipping/shipments/{id}");
        let (status, _, shipment) = call(&shop, Method::GET, &path, &Value::Null, Some(&bob)).await;
        (status == 200 && shipment.contains("\"shipped\"")).then_some(shipment)
    })
    .await;
    assert!(shipped.contains("c-bob"));
    shop.chaos.start(Part::Service(ServiceName::Customer)).await.unwrap();
    finish(shop).await;
}

#[tokio::test]
async fn a_token_signed_out_or_ended_by_a_password_change_is_refused_once_the_revocation_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    let refused_everywhere = |token: String| {
        let shop = &shop;
        async move {
            for path in ["/api/customer/customers/c-cyd", "/api/order/carts/c-cyd", "/api/shipping/shipments"]
            {
                eventually(&format!("{path} to refuse the revoked token"), || async {
                    let (status, _, _) = call(shop, Method::GET, path, &Value::Null, Some(&token)).await;
                    (status == StatusCode::UNAUTHORIZED).then_some(())
                })
                .await;
            }
        }
    };
    let first = sign_in(&shop, "cyd@example.com").await;
    let (status, _, _) = call(&shop, Method::GET, "/api/order/carts/c-cyd", &Value::Null, Some(&first)).await;
    assert_eq!(status, 200);
    let (status, _, _) =
        call(&shop, Method::DELETE, "/api/customer/sessions/current", &Value::Null, Some(&first)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) =
        call(&shop, Method::GET, "/api/customer/customers/c-cyd", &Value::Null, Some(&first)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the customer service refuses it at once");
    refused_everywhere(first).await;

    let (second, third) = (sign_in(&shop, "cyd@example.com").await, sign_in(&shop, "cyd@example.com").await);
    let change = json!({ "current_password": PASSWORD, "new_password": "a-new-password" });
    let path = "/api/customer/customers/c-cyd/password";
    let wrong = json!({ "current_password": "not-it-at-all", "new_password": "a-new-password" });
    assert_eq!(call(&shop, Method::PUT, path, &wrong, Some(&second)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&shop, Method::PUT, path, &change, Some(&second)).await.0, StatusCode::NO_CONTENT);
    refused_everywhere(second).await;
    refused_everywhere(third).await;
    let old = json!({ "email": "cyd@example.com", "password": PASSWORD });
    assert_eq!(
        call(&shop, Method::POST, "/api/customer/sessions", &old, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let new = json!({ "email": "cyd@example.com", "password": "a-new-password" });
    assert_eq!(call(&shop, Method::POST, "/api/customer/sessions", &new, None).await.0, StatusCode::CREATED);
    finish(shop).await;
}
