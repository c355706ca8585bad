use std::collections::HashMap;
use std::time::Duration;

use kit::bus::ConsumerSpec;
use kit::envelope::Envelope;
use serde_json::{Value, json};

use super::PaymentService;
use super::events::{PAYMENT_AUTHORIZED, PAYMENT_DECLINED, PAYMENT_VOIDED};
use super::model::{AMOUNT_LIMIT_CENTS, Charge, INVOICE_LIMIT_CENTS, decide};
use crate::contracts::customer::PaymentMethod;
use crate::contracts::payment::AuthorizationStatus;
use crate::service::testing::{Running, spawn};

async fn payment_service() -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    (spawn::<PaymentService>(dir.path(), bus, HashMap::new()).await, dir)
}

fn request(order_id: &str, amount_cents: u64, method: Value) -> Value {
    json!({ "order_id": order_id, "customer_id": "c-ada", "amount_cents": amount_cents, "payment_method": method })
}

fn card() -> Value {
    json!({ "kind": "card", "last4": "4242" })
}

async fn authorize(service: &Running, body: &Value) -> reqwest::Response {
    reqwest::Client::new().post(service.url("/authorizations")).json(body).send().await.unwrap()
}

/// Waits until the relay has moved every committed event to the bus, then counts them.
async fn published_count(service: &Running) -> u64 {
    loop {
        let outbox = service.ctx.outbox.clone();
        let backlog: u64 = service.ctx.store.transact(move |tx| outbox.backlog(tx)).await.unwrap();
        if backlog == 0 {
            return service.ctx.bus.stream_head("payment").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The first `n` events of the payment stream, read by a fresh consumer.
async fn published(service: &Running, n: usize) -> Vec<Envelope> {
    let spec = ConsumerSpec::new("test.reader", &["payment"]);
    let mut subscription = service.ctx.bus.subscribe(&spec).await.unwrap();
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

#[tokio::test]
async fn an_ordinary_payment_is_authorized_recorded_and_published() {
    let (service, _dir) = payment_service().await;
    let response = authorize(&service, &request("o-1", 4999, card())).await;
    assert_eq!(response.status(), 201);
    let authorization: Value = response.json().await.unwrap();
    assert_eq!(authorization["status"], "authorized");
    assert_eq!(authorization["reason"], Value::Null);
    let id = authorization["authorization_id"].as_str().unwrap();
    assert!(id.starts_with("a-") && id.len() == 34, "{id}");

    let shown: Value =
        reqwest::get(service.url(&format!("/authorizations/{id}"))).await.unwrap().json().await.unwrap();
    assert_eq!(shown, authorization);
    let by_order: Value =
        reqwest::get(service.url("/authorizations?order_id=o-1")).await.unwrap().json().await.unwrap();
    assert_eq!(by_order, json!([authorization]));

    let events = published(&service, 1).await;
    assert_eq!((events[0].kind.as_str(), events[0].key.as_str()), (PAYMENT_AUTHORIZED, "o-1"));
    assert_eq!(events[0].payload, authorization);
}

#[tokio::test]
async fn payments_over_the_limits_are_declined_with_the_reason_and_published() {
    let (service, _dir) = payment_service().await;
    let declined: Value =
        authorize(&service, &request("o-big", 1_000_001, card())).await.json().await.unwrap();
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["reason"], "amount exceeds the limit of 10000.00");
    let invoice = json!({ "kind": "invoice" });
    let response = authorize(&service, &request("o-invoice", 200_001, invoice.clone())).await;
    assert_eq!(response.status(), 201);
    let declined: Value = response.json().await.unwrap();
    assert_eq!(declined["reason"], "invoice payments are limited to 2000.00");
    let small: Value = authorize(&service, &request("o-small", 200_000, invoice)).await.json().await.unwrap();
    assert_eq!(small["status"], "authorized");

    let kinds: Vec<String> = published(&service, 3).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [PAYMENT_DECLINED, PAYMENT_DECLINED, PAYMENT_AUTHORIZED]);
}

#[tokio::test]
async fn asking_again_for_the_same_order_answers_the_first_decision_and_publishes_once() {
    let (service, _dir) = payment_service().await;
    let first = authorize(&service, &request("o-7", 2500, card())).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // Even a different amount gets the first decision: the order was decided.
    for body in [request("o-7", 2500, card()), request("o-7", 5_000_000, card())] {
        let again = authorize(&service, &body).await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(published_count(&service).await, 1);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_problem_and_change_nothing() {
    let (service, _dir) = payment_service().await;
    let cases = [
        (request("o-1", 0, card()), 422, "amount_cents must be more than 0 and at most 9223372036854775807"),
        (
            request("o-1", 9_223_372_036_854_775_808, card()),
            422,
            "amount_cents must be more than 0 and at most 9223372036854775807",
        ),
        (request("", 100, card()), 422, "order_id must not be empty"),
        (request("o 1", 100, card()), 422, "order_id must be printable ASCII without spaces"),
        (
            json!({ "order_id": "o-1", "customer_id": "", "amount_cents": 1, "payment_method": card() }),
            422,
            "customer_id must not be empty",
        ),
        (
            request("o-1", 100, json!({ "kind": "card", "last4": "42" })),
            422,
            "payment_method.last4 must be the last four digits of the card",
        ),
        (request("o-1", 100, json!({ "kind": "cheque" })), 422, ""),
        (json!({ "order_id": "o-1", "amount_cents": 100 }), 422, ""),
        (request("o-1", 100, card()).get("order_id").cloned().unwrap(), 422, ""),
    ];
    for (body, status, detail) in cases {
        let response = authorize(&service, &body).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        if !detail.is_empty() {
            assert_eq!(problem["detail"], detail);
        }
    }
    let response = reqwest::Client::new()
        .post(service.url("/authorizations"))
        .header("content-type", "application/json")
        .body("{\"order_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let all: Value = reqwest::get(service.url("/authorizations")).await.unwrap().json().await.unwrap();
    assert_eq!(all, json!([]));
    assert_eq!(published_count(&service).await, 0);
}

#[tokio::test]
async fn unknown_authorizations_are_not_found_and_bad_queries_are_refused() {
    let (service, _dir) = payment_service().await;
    let response = reqwest::get(service.url("/authorizations/a-nothing")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let none: Value =
        reqwest::get(service.url("/authorizations?order_id=o-none")).await.unwrap().json().await.unwrap();
    assert_eq!(none, json!([]));
    assert_eq!(reqwest::get(service.url("/authorizations?limit=0")).await.unwrap().status(), 422);
    assert_eq!(reqwest::get(service.url("/authorizations?limit=x")).await.unwrap().status(), 400);
}

#[test]
fn the_limits_include_their_own_amount() {
    let charge = |amount_cents, payment_method| Charge {
        order_id: "o-1".into(),
        customer_id: "c-1".into(),
        amount_cents,
        payment_method,
    };
    let card = PaymentMethod::Card { last4: "4242".into() };
    assert_eq!(decide(&charge(AMOUNT_LIMIT_CENTS, card.clone())).0, AuthorizationStatus::Authorized);
    assert_eq!(decide(&charge(AMOUNT_LIMIT_CENTS + 1, card)).0, AuthorizationStatus::Declined);
    assert_eq!(
        decide(&charge(INVOICE_LIMIT_CENTS, PaymentMethod::Invoice)).0,
        AuthorizationStatus::Authorized
    );
    assert_eq!(
        decide(&charge(INVOICE_LIMIT_CENTS + 1, PaymentMethod::Invoice)).0,
        AuthorizationStatus::Declined
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_order_make_one_decision() {
    let (service, _dir) = payment_service().await;
    let body = request("o-race", 1234, card());
    let answers = send_at_once(&service, &body, 8).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1);
    assert!(answers.iter().all(|(_, a)| a == &answers[0].1));
    assert_eq!(published_count(&service).await, 1);
}

/// Sends `body` `n` times at once and collects every (status, answer).
async fn send_at_once(service: &Running, body: &Value, n: usize) -> Vec<(u16, Value)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (url, body) = (service.url("/authorizations"), body.clone());
        tasks.spawn(async move {
            let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        });
    }
    tasks.join_all().await
}

async fn void(service: &Running, order_id: &str) -> reqwest::Response {
    let body = json!({ "order_id": order_id });
    reqwest::Client::new().post(service.url("/voids")).json(&body).send().await.unwrap()
}

#[tokio::test]
async fn a_void_turns_an_authorization_into_a_voided_one_once_and_publishes_it() {
    let (service, _dir) = payment_service().await;
    let authorized: Value = authorize(&service, &request("o-1", 4999, card())).await.json().await.unwrap();
    for _ in 0..2 {
        let response = void(&service, "o-1").await;
        assert_eq!(response.status(), 200);
        let voided: Value = response.json().await.unwrap();
        assert_eq!(voided["status"], "voided", "{voided}");
        assert_eq!(voided["authorization_id"], authorized["authorization_id"]);
        assert!(voided["reason"].as_str().unwrap().contains("abandoned"), "{voided}");
    }
    let again: Value = authorize(&service, &request("o-1", 4999, card())).await.json().await.unwrap();
    assert_eq!(again["status"], "voided", "asking again answers the voided decision: {again}");

    assert_eq!(published_count(&service).await, 2, "one decision, one void, however often it is asked");
    let events = published(&service, 2).await;
    assert_eq!(
        (events[1].kind.as_str(), events[1].key.as_str(), events[1].version),
        (PAYMENT_VOIDED, "o-1", 2)
    );
}

#[tokio::test]
async fn an_authorization_asked_for_after_its_void_is_refused_and_recorded_nowhere() {
    let (service, _dir) = payment_service().await;
    let response = void(&service, "o-2").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), Value::Null, "payment had made none");
    let response = authorize(&service, &request("o-2", 4999, card())).await;
    assert_eq!(response.status(), 200);
    let refused: Value = response.json().await.unwrap();
    assert_eq!(refused["status"], "voided", "{refused}");
    let listed: Value =
        reqwest::get(service.url("/authorizations?order_id=o-2")).await.unwrap().json().await.unwrap();
    assert_eq!(listed, json!([]));
    assert_eq!(published_count(&service).await, 0);

    let declined: Value =
        authorize(&service, &request("o-3", AMOUNT_LIMIT_CENTS + 1, card())).await.json().await.unwrap();
    let after: Value = void(&service, "o-3").await.json().await.unwrap();
    assert_eq!(after, declined, "a declined decision stays declined");

    let response = void(&service, "not an id").await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}
