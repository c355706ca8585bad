//! The shipping service fed by its real producers' events over the embedded bus, and
//! watched through its HTTP API.

mod fixtures;
mod shuffled;

use std::collections::HashMap;
use std::sync::Arc;

use kit::bus::{Bus, ConsumerSpec};
use kit::envelope::Envelope;
use serde_json::Value;

use super::ShippingService;
use super::events::{SHIPMENT_CREATED, SHIPMENT_HELD};
use super::store;
use crate::contracts::customer::Customer;
use crate::contracts::customer::{ADDRESS_CHANGED, REGISTERED};
use crate::contracts::order::{Order, OrderStatus};
use crate::contracts::payment::{Authorization, AuthorizationStatus};
use crate::service::testing::{Producer, Running, eventually, spawn};
use fixtures::{
    LEEDS_VS_LONDON, authorization, customer, leeds, london, order, order_events, placed_and_confirmed, then,
};

struct Harness {
    service: Running,
    bus: Arc<dyn Bus>,
    customers: Producer,
    orders: Producer,
    payments: Producer,
    /// Whom requests sign in as: c-ada unless a test says otherwise.
    shopper: std::sync::Mutex<&'static str>,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    Harness {
        service: spawn::<ShippingService>(dir.path(), bus.clone(), HashMap::new()).await,
        customers: Producer::open(dir.path(), "customer", bus.clone()).await,
        orders: Producer::open(dir.path(), "order", bus.clone()).await,
        payments: Producer::open(dir.path(), "payment", bus.clone()).await,
        shopper: std::sync::Mutex::new("c-ada"),
        bus,
        _dir: dir,
    }
}

impl Harness {
    /// Signs the following requests in as `customer`.
    fn sign_in_as(&self, customer: &'static str) {
        *self.shopper.lock().unwrap() = customer;
    }

    /// GETs `path` signed in as the shopper, or with the admin token for the operator's `/held`.
    async fn get(&self, path: &str) -> (u16, Value) {
        let token = if path.starts_with("/held") {
            crate::service::testing::ADMIN_TOKEN.to_owned()
        } else {
            let shopper = *self.shopper.lock().unwrap();
            self.service.session_of(shopper)
        };
        let request = reqwest::Client::new().get(self.service.url(path)).bearer_auth(token);
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn shipments(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/shipments?order_id={order_id}")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap()
    }

    /// Waits until the order's shipment has `status` (and `reason`, when given).
    async fn shipment(&self, order_id: &str, status: &str, reason: Option<&str>) -> Value {
        eventually(&format!("the shipment of {order_id} to be {status} ({reason:?})"), || async {
            let shipments = self.shipments(order_id).await;
            let found = shipments.first().filter(|s| s["status"] == status);
            found.filter(|s| reason.is_none_or(|r| s["reason"] == r)).cloned()
        })
        .await
    }

    async fn emit_customer(&self, kind: &str, customer: &Customer) {
        self.customers.emit(vec![crate::contracts::customer::event(kind, customer)]).await;
    }

    async fn emit_orders(&self, versions: &[Order]) {
        self.orders.emit(order_events(versions)).await;
    }

    /// Publishes the last of `versions`, as the order service does for a change.
    async fn emit_latest(&self, versions: &[Order]) {
        self.orders.emit(order_events(versions).split_off(versions.len() - 1)).await;
    }

    async fn emit_payment(&self, authorization: &Authorization) {
        self.payments.emit(vec![crate::contracts::payment::event(authorization)]).await;
    }

    /// Waits until the service has recorded the payment of `order_id`.
    async fn payment_recorded(&self, order_id: &str) {
        eventually("the payment to be recorded", || async {
            let id = order_id.to_owned();
            let payment = self.service.ctx.store.transact(move |tx| store::payment(tx, &id)).await.unwrap();
            (payment != super::model::Payment::Unknown).then_some(())
        })
        .await;
    }

    /// Every event shipping has committed so far, once relayed, in stream order.
    async fn published(&self) -> Vec<Envelope> {
        let committed: u64 = self
            .service
            .ctx
            .store
            .transact(|tx| {
                tx.query_one("SELECT coalesce(max(last_seq), 0) FROM kit_outbox_head", &[])?.get(0)
            })
            .await
            .unwrap();
        let head = eventually("the relay to publish every shipment event", || async {
            let head = self.bus.stream_head("shipping").await.unwrap();
            (head >= committed).then_some(head)
        })
        .await;
        let spec = ConsumerSpec::new(format!("test.watch-{}", uuid::Uuid::now_v7().simple()), &["shipping"]);
        let mut subscription = self.bus.subscribe(&spec).await.unwrap();
        let mut events = Vec::new();
        while (events.len() as u64) < head {
            for delivery in subscription.fetch(100).await.unwrap() {
                events.push(serde_json::from_slice::<Envelope>(&delivery.message.body).unwrap());
            }
        }
        events.sort_by_key(|e| e.seq);
        events
    }
}

#[tokio::test]
async fn a_confirmed_paid_order_to_the_customers_current_address_ships_and_publishes_shipment_created() {
    let shop = harness().await;
    shop.emit_customer(REGISTERED, &customer("c-ada", london(), 1)).await;
    shop.emit_payment(&authorization("o-1", "c-ada", AuthorizationStatus::Authorized)).await;
    shop.emit_orders(&placed_and_confirmed("o-1", "c-ada", london(), false)).await;

    let shipped = shop.shipment("o-1", "shipped", None).await;
    assert_eq!(shipped["address"]["city"], "London");
    assert_eq!(shipped["customer_id"], "c-ada");
    assert_eq!(shipped["reason"], Value::Null);
    let published = shop.published().await;
    let created: Vec<_> = published.iter().filter(|e| e.kind == SHIPMENT_CREATED).collect();
    assert_eq!(created.len(), 1, "shipped once: {published:?}");
    assert_eq!(created[0].key, "o-1");
    assert_eq!(created[0].version, shipped["version"].as_u64().unwrap());
    assert_eq!(created[0].payload, shipped, "the event carries the shipment at its version");
    let (_, same) = shop.get("/shipments/o-1").await;
    assert_eq!(same, shipped);
}

#[tokio::test]
async fn an_overridden_address_that_differs_is_held_until_the_customer_moves_there() {
    let shop = harness().await;
    shop.emit_customer(REGISTERED, &customer("c-ada", london(), 1)).await;
    shop.emit_payment(&authorization("o-2", "c-ada", AuthorizationStatus::Authorized)).await;
    shop.emit_orders(&placed_and_confirmed("o-2", "c-ada", leeds(), true)).await;

    let held = shop.shipment("o-2", "held", Some(LEEDS_VS_LONDON)).await;
    assert_eq!(held["address"]["city"], "Leeds");
    let (_, listed) = shop.get("/held").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["order_id"], "o-2");
    assert_eq!(listed[0]["reason"], LEEDS_VS_LONDON);

    shop.emit_customer(ADDRESS_CHANGED, &customer("c-ada", leeds(), 2)).await;
    let shipped = shop.shipment("o-2", "shipped", None).await;
    assert_eq!(shipped["address"], serde_json::to_value(leeds()).unwrap());
    assert_eq!(shop.get("/held").await.1, serde_json::json!([]));
    let kinds: Vec<_> = shop.published().await.into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.last().map(String::as_str), Some(SHIPMENT_CREATED), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == SHIPMENT_HELD), "{kinds:?}");
}

#[tokio::test]
async fn a_held_shipment_ships_once_the_customer_confirms_the_orders_address() {
    let shop = harness().await;
    shop.emit_customer(REGISTERED, &customer("c-ada", london(), 1)).await;
    shop.emit_payment(&authorization("o-3", "c-ada", AuthorizationStatus::Authorized)).await;
    let versions = placed_and_confirmed("o-3", "c-ada", leeds(), true);
    shop.emit_orders(&versions).await;
    shop.shipment("o-3", "held", Some(LEEDS_VS_LONDON)).await;

    let versions = then(versions, |o| o.address_confirmed = true);
    shop.emit_latest(&versions).await;
    let shipped = shop.shipment("o-3", "shipped", None).await;
    assert_eq!(shipped["address"]["city"], "Leeds", "shipped to the address the customer confirmed");
}

#[tokio::test]
async fn an_unpaid_order_is_held_waiting_for_payment_and_ships_once_paid() {
    let shop = harness().await;
    shop.emit_customer(REGISTERED, &customer("c-ada", london(), 1)).await;
    shop.emit_orders(&placed_and_confirmed("o-4", "c-ada", london(), false)).await;
    shop.shipment("o-4", "held", Some("waiting for payment")).await;

    shop.emit_payment(&authorization("o-4", "c-ada", AuthorizationStatus::Authorized)).await;
    shop.shipment("o-4", "shipped", None).await;
}

#[tokio::test]
async fn events_arriving_in_any_order_end_in_the_same_shipment() {
    let shop = harness().await;
    // Payment first, then the order (whose customer is unknown yet), then the customer.
    shop.emit_payment(&authorization("o-5", "c-bob", AuthorizationStatus::Authorized)).await;
    shop.payment_recorded("o-5").await;
    shop.emit_orders(&placed_and_confirmed("o-5", "c-bob", london(), false)).await;
    shop.sign_in_as("c-bob");
    shop.shipment("o-5", "held", Some("the customer's address is not known yet")).await;
    shop.emit_customer(REGISTERED, &customer("c-bob", london(), 1)).await;
    let late = shop.shipment("o-5", "shipped", None).await;

    // The order first, then the customer, then the payment.
    shop.emit_orders(&placed_and_confirmed("o-6", "c-cyd", london(), false)).await;
    shop.sign_in_as("c-cyd");
    let reasons = "waiting for payment; the customer's address is not known yet";
    shop.shipment("o-6", "held", Some(reasons)).await;
    shop.emit_customer(REGISTERED, &customer("c-cyd", london(), 1)).await;
    shop.shipment("o-6", "held", Some("waiting for payment")).await;
    shop.emit_payment(&authorization("o-6", "c-cyd", AuthorizationStatus::Authorized)).await;
    let other = shop.shipment("o-6", "shipped", None).await;

    assert_eq!(late["address"], other["address"]);
    assert_eq!(late["reason"], other["reason"]);
}

#[tokio::test]
async fn a_rejected_order_never_ships_and_a_cancelled_one_closes_its_held_shipment() {
    let shop = harness().await;
    shop.emit_customer(REGISTERED, &customer("c-ada", london(), 1)).await;
    shop.emit_payment(&authorization("o-7", "c-ada", AuthorizationStatus::Authorized)).await;
    let mut rejected = order("o-7", "c-ada", london(), OrderStatus::Rejected, 2);
    rejected.reason = Some("out of stock".into());
    shop.emit_orders(&[order("o-7", "c-ada", london(), OrderStatus::PendingStock, 1), rejected]).await;
    shop.payment_recorded("o-7").await;
    eventually("the rejection to be replicated", || async {
        let stored = shop.service.ctx.store.transact(|tx| store::order(tx, "o-7")).await.unwrap();
        stored.filter(|o| o.status == OrderStatus::Rejected).map(|_| ())
    })
    .await;
    assert!(shop.shipments("o-7").await.is_empty(), "a rejected order gets no shipment");

    shop.emit_payment(&authorization("o-8", "c-ada", AuthorizationStatus::Authorized)).await;
    let versions = placed_and_confirmed("o-8", "c-ada", leeds(), true);
    shop.emit_orders(&versions).await;
    shop.shipment("o-8", "held", Some(LEEDS_VS_LONDON)).await;
    let versions = then(versions, |o| {
        o.status = OrderStatus::Cancelled;
        o.reason = Some("cancelled by the customer".into());
    });
    shop.emit_latest(&versions).await;
    let closing = "the order was cancelled (cancelled by the customer), so it will not ship";
    shop.shipment("o-8", "held", Some(closing)).await;
    assert_eq!(shop.get("/held").await.1, serde_json::json!([]), "a closed shipment waits for nothing");

    // Even when the customer moves to the order's address, a cancelled order stays put.
    shop.emit_customer(ADDRESS_CHANGED, &customer("c-ada", leeds(), 2)).await;
    eventually("the new address to be replicated", || async {
        let known = shop.service.ctx.store.transact(|tx| store::customer_address(tx, "c-ada")).await.unwrap();
        (known == Some(leeds())).then_some(())
    })
    .await;
    assert_eq!(shop.shipments("o-8").await[0]["reason"], closing);
    let kinds: Vec<_> = shop.published().await.into_iter().map(|e| e.kind).collect();
    assert!(!kinds.iter().any(|k| k == SHIPMENT_CREATED), "{kinds:?}");
}

#[tokio::test]
async fn unknown_shipments_and_bad_order_ids_get_clear_problems() {
    let shop = harness().await;
    let response = reqwest::Client::new()
        .get(shop.service.url("/shipments/o-nothing"))
        .bearer_auth(shop.service.session_of("c-ada"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "no shipment for order o-nothing");
    let (status, problem) = shop.get("/shipments?order_id=Robert%27);DROP").await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().starts_with("order_id "), "{problem}");
    assert_eq!(shop.get("/shipments?order_id=o-nothing").await, (200, serde_json::json!([])));
    assert_eq!(shop.get("/shipments?order=o-1").await.0, 400);
    let (_, openapi) = shop.get("/openapi.json").await;
    for path in ["/shipments", "/shipments/{order_id}", "/held"] {
        assert!(openapi["paths"][path]["get"].is_object(), "{path} is documented");
    }
}
