//! Limits (OWASP API4) through the gateway: sign-in attempts per email and per client
//! address, and writes per customer, answer 429 problem+json with Retry-After once spent,
//! and a refused request changes nothing. Quotas are per minute here, so no test depends
//! on how fast it runs.

mod support;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop::launch::{ShopConfig, launch};
use shop::service::Choices;
use shop::service::limits::{Limits, per_minute};
use support::*;

async fn limited_shop(dir: &std::path::Path) -> shop::launch::Shop {
    let limits = Limits {
        sign_ins_per_email: Some(per_minute(3)),
        sign_ins_per_address: Some(per_minute(8)),
        writes_per_customer: Some(per_minute(4)),
    };
    let config = ShopConfig::ephemeral(dir, TOKEN, Choices { limits, ..Choices::default() });
    launch(config).await.expect("the shop starts")
}

async fn attempt(shop: &impl Gateway, email: &str, password: &str) -> (StatusCode, Option<String>, Value) {
    let body = json!({ "email": email, "password": password });
    let response = Client::new().post(shop.url("/api/customer/sessions")).json(&body).send().await.unwrap();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let (status, content_type) = (response.status(), response.headers()["content-type"].clone());
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert_eq!(content_type, "application/problem+json");
    }
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_email_and_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let shop = limited_shop(dir.path()).await;
    for _ in 0..3 {
        assert_eq!(attempt(&shop, "ada@example.com", "guess-guess").await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, retry_after, problem) = attempt(&shop, "ada@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits: {problem}");
    let seconds: u64 = retry_after.expect("a Retry-After").parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    assert!(problem["detail"].as_str().unwrap().contains("this email"), "{problem}");

    // Other emails have their own quota, but the address's is shared: 8 a minute.
    let mut statuses = Vec::new();
    for n in 0..5 {
        statuses.push(attempt(&shop, &format!("guess{n}@example.com"), "guess-guess").await.0);
    }
    assert_eq!(
        statuses,
        vec![StatusCode::UNAUTHORIZED; 4]
            .into_iter()
            .chain([StatusCode::TOO_MANY_REQUESTS])
            .collect::<Vec<_>>()
    );
    let (_, _, problem) = attempt(&shop, "bob@example.com", PASSWORD).await;
    assert!(problem["detail"].as_str().unwrap().contains("this address"), "{problem}");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn a_customers_writes_past_the_limit_get_429_and_change_nothing_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let shop = limited_shop(dir.path()).await;
    replicated(&shop).await; // one write and one removal of Ada's: 2 of her 4
    let item = json!({ "product_id": "p-002", "quantity": 1 });
    let (status, _) = post(&shop, "/api/order/carts/c-ada/items", item.clone()).await;
    assert_eq!(status, 200);
    let ada = session(&shop, "c-ada").await;
    let mut refused = None;
    for _ in 0..3 {
        let response = Client::new()
            .post(shop.url("/api/order/carts/c-ada/items"))
            .bearer_auth(&ada)
            .json(&item)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused =
                Some((response.headers()["retry-after"].clone(), response.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (retry_after, problem) = refused.expect("a write past the limit is refused");
    assert!(retry_after.to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(problem["detail"].as_str().unwrap().contains("writes of this customer"), "{problem}");
    let (status, cart) = get(&shop, "/api/order/carts/c-ada").await;
    assert_eq!(status, 200, "reads are not limited");
    assert!(cart[0]["quantity"].as_i64().unwrap() <= 2, "the refused writes changed nothing: {cart}");
    let (status, _) = post(&shop, "/api/order/carts/c-bob/items", item).await;
    assert_eq!(status, 200, "Bob's writes are his own");
    shop.stop().await.unwrap();
}

#[tokio::test]
async fn lists_answer_a_page_at_a_time_with_the_cursor_of_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    let mut placed = Vec::new();
    for product in ["p-001", "p-002", "p-003"] {
        post(&shop, "/api/order/carts/c-ada/items", json!({ "product_id": product, "quantity": 1 })).await;
        let (status, order) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-ada" })).await;
        assert_eq!(status, 201, "{order}");
        placed.push(order["id"].as_str().unwrap().to_owned());
    }
    let ada = session(&shop, "c-ada").await;
    let page = |query: String| {
        let (shop, ada) = (&shop, ada.clone());
        async move {
            let url = shop.url(&format!("/api/order/orders?customer_id=c-ada{query}"));
            let response = Client::new().get(url).bearer_auth(ada).send().await.unwrap();
            let next = response.headers().get("next-cursor").map(|v| v.to_str().unwrap().to_owned());
            (response.status(), next, response.json::<Value>().await.unwrap())
        }
    };
    let (status, next, first) = page("&limit=2".into()).await;
    assert_eq!(status, 200);
    let ids = |page: &Value| {
        page.as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), placed[..2]);
    let (_, last, second) = page(format!("&limit=2&cursor={}", next.expect("a next cursor"))).await;
    assert_eq!(ids(&second), placed[2..]);
    assert!(last.is_none(), "the last page names no next one");
    for bad in ["&limit=0", "&limit=101", "&cursor=%21%21"] {
        let (status, _, problem) = page(bad.into()).await;
        assert_eq!(status, 422, "{bad}: {problem}");
    }
    let (_, customers) = get_admin(&shop, "/api/customer/customers?limit=2").await;
    assert_eq!(customers.as_array().unwrap().len(), 2);
    finish(shop).await;
}
