use std::collections::HashMap;

use serde_json::{Value, json};

use super::{CustomerService, DEMO_PASSWORD};
use crate::service::testing::{ADMIN_TOKEN, Running, spawn};

/// Signs in as the seeded customer of `email` with the demo password.
async fn sign_in(service: &Running, email: &str) -> String {
    let body = json!({ "email": email, "password": DEMO_PASSWORD });
    let response = reqwest::Client::new().post(service.url("/sessions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    answer["token"].as_str().unwrap().to_owned()
}

async fn customer_service() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    (spawn::<CustomerService>(dir.path(), bus, HashMap::new()).await, dir)
}

#[tokio::test]
async fn a_fresh_service_is_seeded_with_three_customers() {
    let (service, _dir) = customer_service().await;
    let client = reqwest::Client::new();
    let listed = client.get(service.url("/customers")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let customers: Vec<Value> = listed.json().await.unwrap();
    assert_eq!(customers.len(), 3);
    assert!(!serde_json::to_string(&customers).unwrap().contains("argon2"), "no hash is shown");
    let response = client.get(service.url("/customers")).send().await.unwrap();
    assert_eq!(response.status(), 401, "listing every customer is the operator's");
    // The seed went through the outbox, so replicas learn of the seeded customers too.
    while service.ctx.bus.stream_head("customer").await.unwrap() < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn changing_the_address_answers_with_a_consistency_token() {
    let (service, _dir) = customer_service().await;
    let client = reqwest::Client::new();
    let address = json!({ "line1": "2 New Road", "city": "Leeds", "postcode": "LS1 1AA", "country": "gb" });
    let token = sign_in(&service, "ada@example.com").await;
    let response = client
        .put(service.url("/customers/c-ada/address"))
        .bearer_auth(&token)
        .json(&address)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["consistency-token"], "customer/c-ada@2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["address"]["country"], "GB");
    assert_eq!(body["consistency_token"], "customer/c-ada@2");
}

#[tokio::test]
async fn a_bad_address_is_refused_with_a_problem_and_changes_nothing() {
    let (service, _dir) = customer_service().await;
    let client = reqwest::Client::new();
    let address = json!({ "line1": " ", "city": "Leeds", "postcode": "LS1", "country": "GB" });
    let token = sign_in(&service, "ada@example.com").await;
    let response = client
        .put(service.url("/customers/c-ada/address"))
        .bearer_auth(&token)
        .json(&address)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "line1 must not be empty");
    let ada = client.get(service.url("/customers/c-ada")).bearer_auth(&token).send().await.unwrap();
    let ada: Value = ada.json().await.unwrap();
    assert_eq!(ada["version"], 1);
}

#[tokio::test]
async fn malformed_json_and_unknown_customers_get_clear_problems() {
    let (service, _dir) = customer_service().await;
    let client = reqwest::Client::new();
    let response = client
        .post(service.url("/customers"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().starts_with("the body is not valid JSON"), "{problem}");
    let token = sign_in(&service, "bob@example.com").await;
    let response = client.get(service.url("/customers/c-nobody")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let (service, _dir) = customer_service().await;
    let client = reqwest::Client::new();
    let response = client.get(service.url("/admin/dead-letters")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = client.get(service.url("/admin/dead-letters")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client
        .get(service.url("/admin/dead-letters"))
        .bearer_auth(crate::service::testing::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
