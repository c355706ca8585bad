//! How the order service takes the answers of the inventory sites: a provisional
//! reservation is not an answer, a final one confirms, a refusal rejects, and a compensation (before
//! or after confirmation) cancels the order with the site's apology.

mod shuffled;

use kit::consumer::Handler;
use kit::envelope::{Envelope, StreamName};
use kit::outbox::Outbox;
use kit::store::{Store, StoreError};

use super::events::apply::StockAnswers;
use super::events::{ORDER_CANCELLED, ORDER_PLACED, OrderLine, OrderStatus};
use super::model::Order;
use super::store;
use crate::contracts::customer::Address;
use crate::contracts::inventory::ReservationStatus;
use crate::contracts::inventory::Site;
use crate::contracts::inventory::{
    Reservation, STOCK_REJECTED, STOCK_RESERVED, StockLine, reservation_event,
};
use crate::service::testing::envelope;

fn placed(id: &str) -> Order {
    Order {
        id: id.into(),
        customer_id: "c-bob".into(),
        status: OrderStatus::PendingStock,
        lines: vec![OrderLine {
            product_id: "p-001".into(),
            name: "Mug".into(),
            quantity: 1,
            unit_price_cents: 900,
        }],
        total_cents: 900,
        address: Address {
            line1: "1 Main St".into(),
            city: "Springfield".into(),
            postcode: "12345".into(),
            country: "US".into(),
        },
        address_source: super::events::AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: "a-1".into(),
        reason: None,
        version: 0,
    }
}

fn answer(
    kind: &str,
    order_id: &str,
    status: ReservationStatus,
    version: u64,
    reason: Option<&str>,
) -> Envelope {
    let reservation = Reservation {
        order_id: order_id.into(),
        lines: vec![StockLine { product_id: "p-001".into(), quantity: 1 }],
        reason: reason.map(str::to_owned),
        site: Some(Site::Dc1),
        status: Some(status),
        placed_at_ms: 1,
        compensated: kind == STOCK_REJECTED && reason.is_some_and(|r| r.starts_with("sorry")),
    };
    envelope("inventory-dc1", &reservation_event(kind, &reservation, version), version)
}

/// Applies `answers` one by one to a fresh order service holding order `o-1`; returns the
/// order and the kinds of the order events published.
async fn after(answers: Vec<Envelope>) -> (Order, Vec<String>) {
    let store = Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Order.migrations()],
    )
    .await
    .unwrap();
    let outbox = Outbox::new(StreamName::parse("order").unwrap());
    let handler = StockAnswers { outbox: outbox.clone() };
    store
        .transact(move |tx| {
            store::place(tx, &outbox, placed("o-1"), &[ORDER_PLACED], 0)
                .map_err(|e| StoreError::Database(e.to_string()))?;
            for event in &answers {
                handler.handle(tx, event).expect("the answer applies");
            }
            let order = store::order(tx, "o-1").map_err(|e| StoreError::Database(e.to_string()))?;
            let kinds = tx
                .query("SELECT body FROM kit_outbox ORDER BY seq", &[])?
                .into_iter()
                .map(|r| {
                    let body: Vec<u8> = r.get(0)?;
                    Ok(serde_json::from_slice::<Envelope>(&body).expect("an envelope").kind)
                })
                .collect::<Result<_, StoreError>>()?;
            Ok::<_, StoreError>((order, kinds))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_provisional_reservation_leaves_the_order_pending_and_the_final_one_confirms_it() {
    let (order, kinds) =
        after(vec![answer(STOCK_RESERVED, "o-1", ReservationStatus::Provisional, 1, None)]).await;
    assert_eq!((order.status, kinds.len()), (OrderStatus::PendingStock, 1));
    let (order, kinds) = after(vec![
        answer(STOCK_RESERVED, "o-1", ReservationStatus::Provisional, 1, None),
        answer(STOCK_RESERVED, "o-1", ReservationStatus::Reserved, 2, None),
    ])
    .await;
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(kinds, [ORDER_PLACED, "OrderConfirmed"]);
}

#[tokio::test]
async fn a_compensation_after_confirmation_cancels_the_order_with_the_apology() {
    let sorry = "sorry: p-001 was oversold";
    let (order, kinds) = after(vec![
        answer(STOCK_RESERVED, "o-1", ReservationStatus::Reserved, 2, None),
        answer(STOCK_REJECTED, "o-1", ReservationStatus::Released, 3, Some(sorry)),
    ])
    .await;
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(order.reason.as_deref(), Some(sorry));
    assert_eq!(kinds, [ORDER_PLACED, "OrderConfirmed", ORDER_CANCELLED]);
}

#[tokio::test]
async fn a_compensation_of_a_pending_order_cancels_it_with_the_apology() {
    let sorry = "sorry: p-001 was oversold";
    let (order, kinds) = after(vec![
        answer(STOCK_RESERVED, "o-1", ReservationStatus::Provisional, 1, None),
        answer(STOCK_REJECTED, "o-1", ReservationStatus::Released, 2, Some(sorry)),
    ])
    .await;
    assert_eq!((order.status, order.reason.as_deref()), (OrderStatus::Cancelled, Some(sorry)));
    assert_eq!(kinds, [ORDER_PLACED, ORDER_CANCELLED]);
}

#[tokio::test]
async fn a_reservation_refused_by_the_other_site_rejects_the_order_with_the_reason() {
    let why = "inventory site dc1 cannot reach dc2";
    let (order, kinds) =
        after(vec![answer(STOCK_REJECTED, "o-1", ReservationStatus::Released, 2, Some(why))]).await;
    assert_eq!((order.status, order.reason.as_deref()), (OrderStatus::Rejected, Some(why)));
    assert_eq!(kinds, [ORDER_PLACED, "OrderRejected"]);
}

/// StockRejected as a site wrote it in schema 1: no site, no status, no `compensated`.
fn schema_1_rejection(order_id: &str, reason: &str) -> kit::envelope::NewEvent {
    let payload = serde_json::json!({
        "order_id": order_id,
        "lines": [{ "product_id": "p-001", "quantity": 1 }],
        "reason": reason,
    });
    kit::envelope::NewEvent::new(STOCK_REJECTED, order_id, 1, payload).schema(1)
}

#[tokio::test]
async fn a_schema_1_rejection_does_not_fit_the_current_reservation_unless_upcast() {
    let v1 = envelope("inventory-dc1", &schema_1_rejection("o-1", "p-001 is sold out"), 1);
    let outbox = Outbox::new(StreamName::parse("order").unwrap());
    let store = Store::open(
        "sqlite::memory:",
        &[&kit::outbox::MIGRATIONS, crate::service::ServiceName::Order.migrations()],
    )
    .await
    .unwrap();
    let handler = StockAnswers { outbox: outbox.clone() };
    let raw = v1.clone();
    let refused = store
        .transact(move |tx| {
            store::place(tx, &outbox, placed("o-1"), &[ORDER_PLACED], 0)
                .map_err(|e| StoreError::Database(e.to_string()))?;
            Ok::<_, StoreError>(handler.handle(tx, &raw).is_err())
        })
        .await
        .unwrap();
    assert!(refused, "schema 2 requires `compensated`, which schema 1 lacks");

    let upcast = crate::contracts::schemas().decode(&v1.to_json()).expect("schema 1 upcasts");
    assert_eq!(upcast.schema, crate::contracts::inventory::RESERVATION_SCHEMA);
    let (order, kinds) = after(vec![upcast]).await;
    assert_eq!((order.status, order.reason.as_deref()), (OrderStatus::Rejected, Some("p-001 is sold out")));
    assert_eq!(kinds, [ORDER_PLACED, "OrderRejected"]);
}

#[tokio::test]
async fn the_order_service_rejects_an_order_on_a_schema_1_rejection_from_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    let service =
        crate::service::testing::spawn::<super::OrderService>(dir.path(), bus.clone(), Default::default())
            .await;
    let outbox = service.ctx.outbox.clone();
    service
        .ctx
        .store
        .transact(move |tx| {
            store::place(tx, &outbox, placed("o-1"), &[ORDER_PLACED], 0)
                .map_err(|e| StoreError::Database(e.to_string()))
        })
        .await
        .unwrap();
    let site = crate::service::testing::Producer::open(dir.path(), "inventory-dc1", bus).await;
    site.emit(vec![schema_1_rejection("o-1", "p-001 is sold out")]).await;

    let ctx = service.ctx.clone();
    let order = crate::service::testing::eventually("the order is rejected", || {
        let ctx = ctx.clone();
        async move {
            let order =
                ctx.store.transact(|tx| Ok::<_, StoreError>(store::order(tx, "o-1").ok())).await.ok()??;
            (order.status == OrderStatus::Rejected).then_some(order)
        }
    })
    .await;
    assert_eq!(order.reason.as_deref(), Some("p-001 is sold out"));
}
