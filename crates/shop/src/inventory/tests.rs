//! The two inventory sites fed by the order service's events over the embedded bus, and
//! watched through the HTTP API and the events of the site the test's orders go to.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kit::bus::{Bus, ConsumerSpec};
use kit::envelope::{Envelope, NewEvent, StreamName};
use kit::outbox::Outbox;
use kit::relay::Relay;
use kit::store::Store;
use serde_json::{Value, json};

use super::events::{Reservation, STOCK_ADJUSTED, STOCK_REJECTED, STOCK_RELEASED, STOCK_RESERVED};
use super::merge::SiteStock;
use super::model::ReservationStatus;
use super::sites::{Mode, Site};
use crate::contracts::customer::Address;
use crate::contracts::order::{
    AddressSource, ORDER_CANCELLED, ORDER_CONFIRMED, ORDER_PLACED, Order, OrderLine, OrderStatus, event,
};
use crate::service::Choices;
use crate::service::testing::{ADMIN_TOKEN, Running, eventually, spawn_sites};

/// The order service as far as inventory can tell: its own store, outbox and relay.
struct Orders {
    store: Store,
    outbox: Outbox,
    relay: Relay,
}

impl Orders {
    async fn open(dir: &Path, bus: Arc<dyn Bus>) -> Self {
        let url = format!("sqlite:{}", dir.join("producer.db").display());
        let store = Store::open(&url, &[&kit::outbox::MIGRATIONS]).await.unwrap();
        let outbox = Outbox::new(StreamName::parse("order").unwrap());
        let relay = Relay::new(store.clone(), outbox.clone(), bus);
        Self { store, outbox, relay }
    }

    /// Commits `events` through the outbox and relays them to the bus.
    async fn emit(&self, events: Vec<NewEvent>) {
        let outbox = self.outbox.clone();
        self.store.transact(move |tx| outbox.append(tx, events)).await.unwrap();
        while self.relay.relay_batch().await.unwrap() > 0 {}
    }
}

/// The customer of the test's orders.
const CUSTOMER: &str = "c-ada";

struct Harness {
    /// The site the test's orders are routed to; `sites` holds both.
    service: Running,
    sites: BTreeMap<Site, Running>,
    links: BTreeMap<String, kit::link::Link>,
    bus: Arc<dyn Bus>,
    orders: Orders,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_in(Mode::Ap).await
}

async fn harness_in(mode: Mode) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let bus = kit::bus::connect(&format!("embedded:{}", dir.path().join("bus.db").display())).await.unwrap();
    let choices = Choices { inventory: mode, ..Choices::default() };
    let (mut sites, links) = spawn_sites(dir.path(), bus.clone(), choices).await;
    Harness {
        service: sites.remove(&Site::of_customer(CUSTOMER)).expect("both sites run"),
        sites,
        links,
        orders: Orders::open(dir.path(), bus.clone()).await,
        bus,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

fn order(id: &str, lines: &[(&str, u32)], status: OrderStatus, version: u64) -> Order {
    order_of(CUSTOMER, id, lines, status, version)
}

fn order_of(customer: &str, id: &str, lines: &[(&str, u32)], status: OrderStatus, version: u64) -> Order {
    Order {
        id: id.into(),
        customer_id: customer.into(),
        status,
        lines: lines
            .iter()
            .map(|(product_id, quantity)| OrderLine {
                product_id: (*product_id).into(),
                name: format!("product {product_id}"),
                quantity: *quantity,
                unit_price_cents: 100,
            })
            .collect(),
        total_cents: lines.iter().map(|(_, q)| u64::from(*q) * 100).sum(),
        address: Address {
            line1: "12 St James's Square".into(),
            city: "London".into(),
            postcode: "SW1Y 4JH".into(),
            country: "GB".into(),
        },
        address_source: AddressSource::Replica,
        address_confirmed: false,
        payment_authorization_id: format!("a-{id}"),
        reason: None,
        version,
    }
}

impl Harness {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.service.url(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn set_on_hand(&self, product_id: &str, on_hand: u64) -> Value {
        let response = self
            .client
            .put(self.service.url(&format!("/stock/{product_id}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "on_hand": on_hand }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn stock(&self, product_id: &str) -> Value {
        let (status, stock) = self.get(&format!("/stock/{product_id}")).await;
        assert_eq!(status, 200, "{stock}");
        stock
    }

    async fn reservations(&self, order_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/reservations?order_id={order_id}")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap()
    }

    /// Waits until both sites have applied everything the order service has published.
    async fn caught_up(&self) {
        let head = self.bus.stream_head("order").await.unwrap();
        let streams = ["order".to_owned()];
        for ctx in std::iter::once(&self.service.ctx).chain(self.sites.values().map(|s| &s.ctx)) {
            let consumer = ctx.consumer_name("orders");
            eventually("inventory to apply every order event", || async {
                let lag = kit::lag::measure(&ctx.store, ctx.bus.as_ref(), &consumer, &streams).await.unwrap();
                (lag[0].applied_seq >= head).then_some(())
            })
            .await;
        }
    }

    /// Every event inventory has committed so far, once relayed, in stream order.
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
        let stream = self.service.ctx.instance();
        let head = eventually("the relay to publish every inventory event", || async {
            let head = self.bus.stream_head(&stream).await.unwrap();
            (head >= committed).then_some(head)
        })
        .await;
        let spec =
            ConsumerSpec::new(format!("test.watch-{}", uuid::Uuid::now_v7().simple()), &[stream.as_str()]);
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

    /// GETs `path` from `site` directly (the other site than the test's, in `sites`).
    async fn at(&self, site: Site, path: &str) -> Value {
        let url = self.sites[&site].url(path);
        self.client.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until the order's lines have `status` at its site.
    async fn lines_in(&self, order_id: &str, status: &str) -> Vec<Value> {
        eventually(&format!("the lines of {order_id} to be {status}"), || async {
            let lines = self.reservations(order_id).await;
            (!lines.is_empty() && lines.iter().all(|l| l["status"] == status)).then_some(lines)
        })
        .await
    }

    /// The published answers (StockReserved, StockRejected, StockReleased) about `order_id`.
    async fn answers(&self, order_id: &str) -> Vec<(String, Reservation)> {
        let answers = [STOCK_RESERVED, STOCK_REJECTED, STOCK_RELEASED];
        let published = self.published().await;
        let about = published.into_iter().filter(|e| answers.contains(&e.kind.as_str()) && e.key == order_id);
        about.map(|e| (e.kind.clone(), e.payload_as().unwrap())).collect()
    }
}

#[tokio::test]
async fn fresh_sites_stock_the_twenty_catalog_products_alike_without_replicating_the_seed() {
    let shop = harness().await;
    let (status, stock) = shop.get("/stock").await;
    assert_eq!(status, 200);
    let stock = stock.as_array().unwrap().clone();
    assert_eq!(stock.len(), 20);
    assert_eq!(stock[0]["product_id"], "p-001");
    assert_eq!(stock[19]["product_id"], "p-020");
    for s in &stock {
        assert!((25..=100).contains(&s["on_hand"].as_u64().unwrap()), "{s}");
        assert_eq!(s["reserved"], 0);
        assert_eq!(s["available"], s["on_hand"]);
    }
    let other = &shop.sites[&Site::of_customer(CUSTOMER).peer()];
    let theirs: Value = shop.client.get(other.url("/stock")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs, Value::Array(stock), "both sites start from the same view");
    assert!(shop.published().await.is_empty(), "the seed is written at both sites, not replicated");
}

#[tokio::test]
async fn a_placed_order_is_reserved_provisionally_then_finally_when_stock_suffices() {
    let shop = harness().await;
    let p1 = shop.set_on_hand("p-001", 10).await;
    shop.set_on_hand("p-002", 5).await;
    let placed = order("o-1", &[("p-001", 3), ("p-002", 5)], OrderStatus::PendingStock, 1);
    shop.orders.emit(vec![event(ORDER_PLACED, &placed)]).await;

    let lines = shop.lines_in("o-1", "reserved").await;
    assert_eq!(lines.len(), 2);
    let p1_now = shop.stock("p-001").await;
    assert_eq!(
        (p1_now["on_hand"].as_u64(), p1_now["reserved"].as_u64(), p1_now["available"].as_u64()),
        (Some(10), Some(3), Some(7))
    );
    assert_eq!(shop.stock("p-002").await["available"], 0, "exactly what was left may be reserved");

    let answers = shop.answers("o-1").await;
    let statuses: Vec<_> = answers.iter().map(|(kind, r)| (kind.as_str(), r.status)).collect();
    assert_eq!(
        statuses,
        [
            (STOCK_RESERVED, Some(ReservationStatus::Provisional)),
            (STOCK_RESERVED, Some(ReservationStatus::Reserved))
        ]
    );
    let reservation = &answers[1].1;
    assert_eq!(reservation.reason, None);
    let reserved: Vec<_> = reservation.lines.iter().map(|l| (l.product_id.as_str(), l.quantity)).collect();
    assert_eq!(reserved, [("p-001", 3), ("p-002", 5)]);
    let counters: Vec<SiteStock> = shop
        .published()
        .await
        .iter()
        .filter(|e| e.kind == STOCK_ADJUSTED && e.key == "p-001")
        .map(|e| e.payload_as().unwrap())
        .collect();
    assert_eq!(counters.len(), 1, "reservations do not move the adjustment counters");
    assert_eq!(counters[0].site, Site::of_customer(CUSTOMER));
    assert!(p1["version"].as_u64() < p1_now["version"].as_u64());
}

#[tokio::test]
async fn an_order_short_of_stock_is_rejected_with_the_reason_and_reserves_nothing() {
    let shop = harness().await;
    shop.set_on_hand("p-001", 10).await;
    shop.set_on_hand("p-003", 1).await;
    let placed = order("o-2", &[("p-001", 1), ("p-003", 2)], OrderStatus::PendingStock, 1);
    shop.orders.emit(vec![event(ORDER_PLACED, &placed)]).await;

    let answers = eventually("the answer to o-2", || async {
        let answers = shop.answers("o-2").await;
        (!answers.is_empty()).then_some(answers)
    })
    .await;
    let (kind, rejection) = &answers[0];
    assert_eq!(kind, STOCK_REJECTED);
    assert_eq!(
        rejection.reason.as_deref(),
        Some("not enough stock of product p-003: 2 requested, 1 available")
    );
    assert!(shop.reservations("o-2").await.is_empty());
    assert_eq!(shop.stock("p-001").await["reserved"], 0, "nothing of the order is reserved");
    assert_eq!(shop.stock("p-003").await["reserved"], 0);
}

#[tokio::test]
async fn an_order_placed_again_or_replayed_reserves_only_once() {
    let shop = harness().await;
    shop.set_on_hand("p-004", 10).await;
    let placed = order("o-3", &[("p-004", 4)], OrderStatus::PendingStock, 1);
    // Two events with their own ids: the inbox cannot tell them apart as duplicates, as
    // with a dead letter replayed after the order was answered.
    shop.orders.emit(vec![event(ORDER_PLACED, &placed)]).await;
    shop.orders.emit(vec![event(ORDER_PLACED, &placed), event(ORDER_PLACED, &placed)]).await;
    shop.caught_up().await;
    shop.lines_in("o-3", "reserved").await;

    assert_eq!(shop.stock("p-004").await["reserved"], 4);
    assert_eq!(shop.reservations("o-3").await.len(), 1);
    let answers = shop.answers("o-3").await;
    let kinds: Vec<_> = answers.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, [STOCK_RESERVED, STOCK_RESERVED], "provisional once, final once: {answers:?}");
}

#[tokio::test]
async fn a_cancelled_order_releases_its_stock_and_stays_released() {
    let shop = harness().await;
    shop.set_on_hand("p-005", 6).await;
    let placed = order("o-4", &[("p-005", 6)], OrderStatus::PendingStock, 1);
    let mut confirmed = placed.clone();
    (confirmed.status, confirmed.version) = (OrderStatus::Confirmed, 2);
    let mut cancelled = confirmed.clone();
    (cancelled.status, cancelled.version) = (OrderStatus::Cancelled, 3);
    cancelled.reason = Some("cancelled by the customer".into());
    shop.orders.emit(vec![event(ORDER_PLACED, &placed)]).await;
    shop.lines_in("o-4", "reserved").await;
    shop.orders.emit(vec![event(ORDER_CONFIRMED, &confirmed), event(ORDER_CANCELLED, &cancelled)]).await;
    shop.caught_up().await;

    let stock = shop.stock("p-005").await;
    assert_eq!((stock["reserved"].as_u64(), stock["available"].as_u64()), (Some(0), Some(6)));
    let lines = shop.reservations("o-4").await;
    assert_eq!(lines[0]["status"], "released");
    let kinds: Vec<_> = shop.answers("o-4").await.into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, [STOCK_RESERVED, STOCK_RESERVED, STOCK_RELEASED]);

    // A late replay of the OrderPlaced of a cancelled order reserves nothing.
    shop.orders.emit(vec![event(ORDER_PLACED, &placed), event(ORDER_CANCELLED, &cancelled)]).await;
    shop.caught_up().await;
    assert_eq!(shop.stock("p-005").await["reserved"], 0);
    assert_eq!(shop.answers("o-4").await.len(), 3);
}

#[tokio::test]
async fn stock_changes_need_the_admin_token_and_bad_requests_get_clear_problems() {
    let shop = harness().await;
    let url = shop.service.url("/stock/p-006");
    let response = shop.client.put(&url).json(&json!({ "on_hand": 3 })).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response =
        shop.client.put(&url).bearer_auth("wrong").json(&json!({ "on_hand": 3 })).send().await.unwrap();
    assert_eq!(response.status(), 403);

    let response =
        shop.client.put(&url).bearer_auth(ADMIN_TOKEN).json(&json!({ "on_hand": 3 })).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let version = shop.stock("p-006").await["version"].as_u64().unwrap();
    assert_eq!(response.headers()["consistency-token"], format!("stock/p-006@{version}").as_str());

    shop.orders
        .emit(vec![event(ORDER_PLACED, &order("o-5", &[("p-006", 2)], OrderStatus::PendingStock, 1))])
        .await;
    shop.caught_up().await;
    shop.lines_in("o-5", "reserved").await;
    let below =
        shop.client.put(&url).bearer_auth(ADMIN_TOKEN).json(&json!({ "on_hand": 1 })).send().await.unwrap();
    assert_eq!(below.status(), 409);
    assert_eq!(below.headers()["content-type"], "application/problem+json");
    let problem: Value = below.json().await.unwrap();
    assert_eq!(problem["detail"], "on_hand of p-006 cannot be 1: 2 are reserved");

    let negative =
        shop.client.put(&url).bearer_auth(ADMIN_TOKEN).json(&json!({ "on_hand": -1 })).send().await.unwrap();
    assert_eq!(negative.status(), 422);
    let problem: Value = negative.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().starts_with("the body does not fit"), "{problem}");
    let bad_id = shop.service.url("/stock/Robert%27);DROP");
    let response =
        shop.client.put(bad_id).bearer_auth(ADMIN_TOKEN).json(&json!({ "on_hand": 1 })).send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(shop.stock("p-006").await["on_hand"], 3, "refused changes change nothing");

    let (status, problem) = shop.get("/stock/p-999").await;
    assert_eq!((status, problem["detail"].as_str()), (404, Some("no stock of product p-999")));
    assert_eq!(shop.get("/reservations").await.0, 400);
    assert_eq!(shop.get("/reservations?order_id=nope").await.0, 422);
    let (_, openapi) = shop.get("/openapi.json").await;
    assert!(openapi["paths"]["/stock/{product_id}"]["put"].is_object());
    assert!(openapi["paths"]["/reservations"]["get"].is_object());
}

#[tokio::test]
async fn a_final_reservation_beyond_stock_lowered_at_the_other_site_is_compensated_with_an_apology() {
    let shop = harness().await;
    assert_ne!(Site::of_customer(CUSTOMER), Site::arbiter(), "the test's orders go to the other site");
    shop.set_on_hand("p-007", 4).await;
    eventually("the arbiter to see the stock", || async {
        (shop.at(Site::arbiter(), "/stock/p-007").await["on_hand"] == 4).then_some(())
    })
    .await;
    // This site stops hearing from the arbiter; the arbiter still hears from it.
    let cut = kit::link::Faults { cut_out: true, cut_in: true, ..Default::default() };
    let towards_arbiter = format!("{}->{}", shop.service.ctx.instance(), Site::arbiter().instance());
    shop.links[&towards_arbiter].set(cut);
    let customer =
        ["c-bob", "c-1", "c-3"].into_iter().find(|c| Site::of_customer(c) == Site::arbiter()).unwrap();
    let placed = order_of(customer, "o-8", &[("p-007", 3)], OrderStatus::PendingStock, 1);
    shop.orders.emit(vec![event(ORDER_PLACED, &placed)]).await;
    eventually("the arbiter to decide o-8", || async {
        let lines = shop.at(Site::arbiter(), "/sites/reservations?order_id=o-8").await;
        (lines[0]["status"] == "reserved").then_some(())
    })
    .await;
    assert_eq!(shop.stock("p-007").await["reserved"], 0, "this site has not heard of o-8");

    shop.set_on_hand("p-007", 1).await;
    let lines = eventually("the arbiter to give o-8 back", || async {
        let lines = shop.at(Site::arbiter(), "/sites/reservations?order_id=o-8").await;
        (lines[0]["status"] == "released").then_some(lines)
    })
    .await;
    assert_eq!(lines[0]["version"], 3);
    shop.links[&towards_arbiter].heal();
    let here = shop.lines_in("o-8", "released").await;
    assert_eq!(Value::Array(here), lines, "both sites agree after the heal");
    let stock = shop.stock("p-007").await;
    assert_eq!((stock["on_hand"].as_u64(), stock["reserved"].as_u64()), (Some(1), Some(0)));
}

#[tokio::test]
async fn calls_between_the_sites_refuse_forged_or_misdirected_ledgers_and_change_nothing() {
    let shop = harness().await;
    let arbiter = &shop.sites[&Site::arbiter()];
    let line = |site: &str, product: &str| {
        json!({ "order_id": "o-9", "product_id": product, "quantity": 1, "status": "provisional",
                "site": site, "placed_at_ms": 1, "version": 1 })
    };
    let other = Site::arbiter().peer().as_str();
    let cases = [
        (
            arbiter.url("/sites/settle"),
            json!({ "counters": [], "lines": [line("dc1", "p-001")] }),
            409,
            "must come from",
        ),
        (
            arbiter.url("/sites/settle"),
            json!({ "counters": [], "lines": [line(other, "P-1")] }),
            422,
            "product_id",
        ),
        (arbiter.url("/sites/settle"), json!({ "lines": "none" }), 422, "does not fit"),
        (
            arbiter.url("/sites/acks"),
            json!({ "counters": [], "lines": [line(other, "p-001")] }),
            409,
            "ap mode",
        ),
        (
            shop.service.url("/sites/settle"),
            json!({ "counters": [], "lines": [] }),
            409,
            "only dc1 arbitrates",
        ),
    ];
    for (url, body, status, says) in cases {
        let response = shop.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), status, "{url} {body}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains(says), "{problem}");
    }
    assert_eq!(
        shop.at(Site::arbiter(), "/sites/reservations?order_id=o-9").await,
        json!([]),
        "nothing reserved"
    );
}

#[tokio::test]
async fn in_cp_concurrent_reservations_on_both_sites_never_take_more_than_the_stock() {
    let shop = harness_in(Mode::Cp).await;
    let other = Site::of_customer(CUSTOMER).peer();
    shop.set_on_hand("p-011", 5).await;
    eventually("the other site to see the stock", || async {
        (shop.at(other, "/stock/p-011").await["on_hand"] == 5).then_some(())
    })
    .await;
    let theirs = ["c-bob", "c-1", "c-3"].into_iter().find(|c| Site::of_customer(c) == other).unwrap();
    let placed: Vec<_> = (0..20)
        .map(|n| {
            let customer = if n % 2 == 0 { CUSTOMER } else { theirs };
            event(
                ORDER_PLACED,
                &order_of(customer, &format!("o-c{n}"), &[("p-011", 1)], OrderStatus::PendingStock, 1),
            )
        })
        .collect();
    shop.orders.emit(placed).await;
    shop.caught_up().await;
    let views = eventually("both sites to conclude every reservation and agree", || async {
        let here = shop.stock("p-011").await;
        let there = shop.at(other, "/stock/p-011").await;
        let idle =
            shop.get("/sites").await.1["waiting"] == 0 && shop.at(other, "/sites").await["waiting"] == 0;
        (idle && here == there).then_some(here)
    })
    .await;
    let mut reserved = 0;
    for n in 0..20 {
        let lines = shop.reservations(&format!("o-c{n}")).await;
        reserved += lines.iter().filter(|l| l["status"] == "reserved").count();
    }
    // Reservations give way by age, so contention on both sites does not refuse everything.
    assert_eq!(reserved, 5, "every unit sold, none twice");
    assert_eq!(views["reserved"], reserved, "{views}");
    assert_eq!(views["oversold"], 0, "{views}");
}
