//! `capshop reconcile` on a real shop: a healthy shop has no finding (live and from its
//! files); damage written straight into one database is found with its keys and classed a
//! defect; an event committed and not yet applied is classed in flight with its seq.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use kit::link::Faults;
use reqwest::Client;
use serde_json::{Value, json};
use shop::contracts::inventory::Site;
use shop::facts;
use shop::reconcile::{self, Class, Finding, Report};
use support::*;

/// Places an order of `customer` for `product` and waits until it has shipped.
async fn ship(shop: &shop::launch::Shop, customer: &str, product: &str) -> String {
    let (status, _) = post(
        shop,
        &format!("/api/order/carts/{customer}/items"),
        json!({ "product_id": product, "quantity": 2 }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, order) = post(shop, "/api/order/orders", json!({ "customer_id": customer })).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    shipment(shop, &id, "shipped").await;
    id
}

/// GETs an admin route through the gateway with the token, expecting 200 and JSON.
async fn admin_get<T: serde::de::DeserializeOwned>(shop: &shop::launch::Shop, path: &str) -> T {
    let response =
        Client::new().get(shop.url(path)).bearer_auth(TOKEN).send().await.expect("the gateway answers");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("a JSON answer")
}

async fn live_report(shop: &shop::launch::Shop) -> Report {
    admin_get(shop, "/admin/reconcile").await
}

/// Waits until the live report has no finding at all (replication settles).
async fn settled(shop: &shop::launch::Shop) -> Report {
    eventually("a report without findings", || async {
        let report = live_report(shop).await;
        report.findings.is_empty().then_some(report)
    })
    .await
}

/// The orders of a healthy, stopped shop in `dir`: one per seeded customer (both sites).
async fn healthy_shop(dir: &Path) -> Vec<(String, String)> {
    let shop = spawn_shop(dir).await;
    replicated(&shop).await;
    let mut orders = Vec::new();
    for customer in ["c-ada", "c-bob", "c-cyd"] {
        orders.push((customer.to_owned(), ship(&shop, customer, "p-002").await));
    }
    let sites: BTreeSet<Site> = orders.iter().map(|(c, _)| Site::of_customer(c)).collect();
    assert_eq!(sites.len(), 2, "the orders meet both sites");
    settled(&shop).await;
    finish(shop).await;
    orders
}

/// A finding as the tests compare it: kind, keys, class.
type Seen = (String, Vec<(String, String)>, Class);

fn kinds(report: &Report) -> Vec<Seen> {
    let mut found: Vec<_> = report
        .findings
        .iter()
        .map(|f: &Finding| (f.kind.clone(), f.keys.clone().into_iter().collect(), f.class))
        .collect();
    found.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    found
}

#[tokio::test]
async fn a_healthy_shop_has_no_finding_live_nor_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    healthy_shop(dir.path()).await;
    let facts = facts::from_files(dir.path()).await.expect("the data dir reads");
    let report = reconcile::check(&facts);
    assert!(report.findings.is_empty(), "{}", report.table());
    assert!(report.is_clean());
    // The checker's table of consumers is the shop's: none unknown to it, none missing.
    let positions: BTreeSet<(&str, &str)> = facts
        .parts
        .iter()
        .flat_map(|p| p.consumers.iter().map(|c| (c.consumer.as_str(), c.stream.as_str())))
        .collect();
    let known: BTreeSet<(&str, &str)> =
        reconcile::CONSUMERS.iter().flat_map(|(c, streams)| streams.iter().map(move |s| (*c, *s))).collect();
    assert!(
        positions.is_subset(&known),
        "consumers reconcile does not know: {:?}",
        positions.difference(&known)
    );
    for (consumer, streams) in reconcile::CONSUMERS {
        for stream in streams {
            let produced =
                facts.parts.iter().flat_map(|p| &p.outbox).any(|o| o.stream == *stream && o.last_seq > 0);
            assert!(
                !produced || positions.contains(&(consumer, *stream)),
                "{consumer} on {stream}: {positions:?}"
            );
        }
    }
}

/// Copies the databases of the stopped shop in `from` to a fresh dir, each as one
/// consistent snapshot (`VACUUM INTO`), whatever its log holds.
fn copy_shop(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "db") {
            let copy = to.path().join(path.file_name().unwrap());
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
        }
    }
    to
}

/// Runs `sql` straight on `file`'s database in `dir`, as damage from outside capshop.
fn damage(dir: &Path, file: &str, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join(format!("{file}.db"))).unwrap();
    let changed = conn.execute(sql, []).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert!(changed > 0, "the damage changed a row: {sql}");
}

#[tokio::test]
async fn damage_written_into_one_database_is_found_with_its_keys_as_a_defect() {
    let healthy = tempfile::tempdir().unwrap();
    let orders = healthy_shop(healthy.path()).await;
    let (customer, order) = &orders[0];
    let site = Site::of_customer(customer);
    let (owner, holder) = (site.instance(), site.peer().instance());
    let facts = facts::from_files(healthy.path()).await.unwrap();
    let authorization = facts
        .parts
        .iter()
        .find_map(|p| match &p.state {
            shop::contracts::facts::ServiceFacts::Order { orders, .. } => {
                orders.iter().find(|o| &o.id == order).map(|o| o.payment_authorization_id.clone())
            }
            _ => None,
        })
        .unwrap();
    let line = format!("{order}/p-002");
    let defect = |kind: &str, keys: &[(&str, &str)]| {
        (
            kind.to_owned(),
            keys.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            Class::Defect,
        )
    };
    let ghost_body = json!({
        "order_id": "o-ghost", "customer_id": customer, "status": "shipped", "reason": null, "version": 1,
        "address": facts.parts.iter().find_map(|p| match &p.state {
            shop::contracts::facts::ServiceFacts::Customer { customers } => customers.iter().find(|c| &c.id == customer).map(|c| c.address.clone()),
            _ => None,
        }).unwrap(),
    });
    let cases: Vec<(&str, String, String, Vec<Seen>)> = vec![
        (
            "a deleted reservation",
            owner.clone(),
            format!("DELETE FROM reservation WHERE order_id = '{order}'"),
            vec![
                defect("confirmed_without_reservation", &[("order", order), ("site", site.as_str())]),
                defect(
                    "replica_without_source",
                    &[("key", &line), ("replica", &format!("{holder}.lines_of_{site}"))],
                ),
            ],
        ),
        (
            "a deleted authorization",
            "payment".into(),
            format!("DELETE FROM authorizations WHERE order_id = '{order}'"),
            vec![defect(
                "order_without_authorization",
                &[("authorization", &authorization), ("order", order)],
            )],
        ),
        (
            "a shipment for a missing order",
            "shipping".into(),
            format!(
                "INSERT INTO shipment (order_id, customer_id, status, version, closed, held_since_ms, body) \
                 VALUES ('o-ghost', '{customer}', 'shipped', 1, 0, NULL, '{}')",
                ghost_body.to_string().replace('\'', "''")
            ),
            vec![defect("shipment_without_confirmed_order", &[("order", "o-ghost")])],
        ),
        (
            "a bumped replica version",
            "order".into(),
            "UPDATE customer_replica SET version = version + 1 WHERE id = 'c-bob'".into(),
            vec![defect("replica_ahead", &[("key", "c-bob"), ("replica", "order.customer_replica")])],
        ),
        (
            "a lowered replica version",
            "shipping".into(),
            "UPDATE customer_address SET version = 0 WHERE customer_id = 'c-cyd'".into(),
            vec![defect("replica_behind", &[("key", "c-cyd"), ("replica", "shipping.customer_address")])],
        ),
        (
            "a search document lost",
            "search".into(),
            "DELETE FROM search_document WHERE kind = 'product' AND id = 'p-003'".into(),
            vec![defect("replica_missing", &[("key", "p-003"), ("replica", "search.product")])],
        ),
        (
            "a placement counted twice",
            "search".into(),
            "UPDATE search_units_ordered SET units = units + 1 WHERE product_id = 'p-002'".into(),
            vec![defect("units_ordered_differ", &[("product", "p-002")])],
        ),
        (
            "stock on hand changed at dc1",
            "inventory-dc1".into(),
            "UPDATE site_stock SET removed = added WHERE site = 'dc1' AND product_id = 'p-002'".into(),
            vec![
                defect("replica_differs", &[("key", "p-002"), ("replica", "inventory-dc2.counters_of_dc1")]),
                defect("stock_overdrawn", &[("product", "p-002"), ("site", "dc1")]),
            ],
        ),
        (
            "a bus ahead of its producer",
            "bus".into(),
            "UPDATE bus_stream SET head_seq = head_seq + 5 WHERE stream = 'order'".into(),
            vec![defect("bus_ahead_of_outbox", &[("stream", "order")])],
        ),
        (
            "a consumer ahead of its producer",
            "shipping".into(),
            "UPDATE kit_applied SET seq = seq + 3 WHERE consumer = 'shipping.order-replica'".into(),
            vec![defect("consumer_ahead", &[("consumer", "shipping.order-replica"), ("stream", "order")])],
        ),
    ];
    for (what, file, sql, mut expected) in cases {
        let dir = copy_shop(healthy.path());
        damage(dir.path(), &file, &sql);
        let report = reconcile::check(&facts::from_files(dir.path()).await.unwrap());
        expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(kinds(&report), expected, "{what}:\n{}", report.table());
        assert!(!report.is_clean(), "{what}");
    }
}

#[tokio::test]
async fn a_deleted_order_leaves_orphans_in_every_service_that_knew_it() {
    let healthy = tempfile::tempdir().unwrap();
    let orders = healthy_shop(healthy.path()).await;
    let (customer, order) = &orders[1];
    let site = Site::of_customer(customer);
    let dir = copy_shop(healthy.path());
    damage(dir.path(), "order", &format!("DELETE FROM orders WHERE id = '{order}'"));
    let report = reconcile::check(&facts::from_files(dir.path()).await.unwrap());
    let found: BTreeSet<String> = report
        .findings
        .iter()
        .filter(|f| f.keys.get("order").or(f.keys.get("key")) == Some(order))
        .map(|f| f.kind.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "reservation_without_order",
        "authorization_without_order",
        "shipment_without_confirmed_order",
        "replica_without_source",
    ]
    .map(String::from)
    .into();
    assert_eq!(found, expected, "{}", report.table());
    assert!(report.findings.iter().all(|f| f.class == Class::Defect), "{}", report.table());
    let orphan = report.findings.iter().find(|f| f.kind == "reservation_without_order").unwrap();
    assert_eq!(orphan.keys["site"], site.as_str());
    assert_eq!(report.orphans, 3, "{}", report.table());
}

#[tokio::test]
async fn an_order_shipping_has_not_applied_yet_is_in_flight_with_its_seq_not_a_defect() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    ship(&shop, "c-ada", "p-004").await;
    settled(&shop).await;
    let order_ctx = &shop.contexts[&shop::service::ServiceName::Order];
    let head_before = order_ctx.bus.stream_head("order").await.unwrap();
    shop.links["shipping->bus"].set(Faults { cut_out: true, cut_in: true, ..Faults::default() });
    post(&shop, "/api/order/carts/c-bob/items", json!({ "product_id": "p-004", "quantity": 1 })).await;
    let (status, placed) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-bob" })).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_str().unwrap().to_owned();
    order_status(&shop, &id, "confirmed").await;

    let in_flight_for = |report: &Report| {
        let finding = report
            .findings
            .iter()
            .find(|f| f.kind == "paid_order_without_shipment" && f.keys["order"] == id)
            .unwrap_or_else(|| panic!("the unshipped order is found:\n{}", report.table()))
            .clone();
        assert_eq!(finding.class, Class::InFlight, "{}", report.table());
        let why = finding.in_flight.expect("an in-flight finding names its event");
        assert_eq!((why.stream.as_str(), why.consumer.as_deref()), ("order", Some("shipping.order-replica")));
        // A fetch already under way when the link was cut may have brought OrderPlaced.
        assert!(
            (head_before + 1..=head_before + 2).contains(&why.seq),
            "one of this order's events: {why:?}"
        );
        assert_eq!(report.defects, 0, "nothing here is a defect:\n{}", report.table());
    };
    // Live: read at one cut of every database and the bus file, so shipping's cut link
    // to the bus does not hide anything.
    let live = eventually("the order's events to reach search and inventory", || async {
        let report = live_report(&shop).await;
        (report.defects == 0 && report.in_flight > 0).then_some(report)
    })
    .await;
    in_flight_for(&live);
    assert_eq!(live.source, "cut");
    shop.stop().await.unwrap();
    // From the files of the stopped shop, the same event still explains it.
    in_flight_for(&reconcile::check(&facts::from_files(dir.path()).await.unwrap()));
}

#[tokio::test]
async fn reconcile_needs_the_admin_token_and_a_directory_of_a_shop() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    let response = Client::new().get(shop.url("/admin/reconcile")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // Each part serves its own facts too, as the distributed gateway asks them.
    let facts = Client::new().get(shop.url("/api/inventory-dc2/admin/facts")).send().await.unwrap();
    assert_eq!(facts.status(), 401);
    let facts: shop::contracts::facts::ShopFacts = admin_get(&shop, "/api/inventory-dc2/admin/facts").await;
    assert_eq!(facts.parts.len(), 1);
    assert_eq!(facts.parts[0].part, "inventory-dc2");
    assert!(
        matches!(&facts.parts[0].state, shop::contracts::facts::ServiceFacts::Inventory { site: Site::Dc2, counters, .. } if !counters.is_empty()),
        "the site's own stock: {:?}",
        facts.parts[0].state
    );
    finish(shop).await;
    let empty = tempfile::tempdir().unwrap();
    let refused = facts::from_files(empty.path()).await.unwrap_err().to_string();
    assert!(refused.contains("holds no") && refused.contains("--data-dir"), "{refused}");
}

#[tokio::test]
async fn on_postgres_a_settled_shop_reconciles_clean_live_and_a_lost_authorization_is_a_defect() {
    let Some(server) = kit::testserver::PgServer::start() else { return };
    for part in shop::launch::StoreLocation::parts() {
        server.create_database(&shop::launch::StoreLocation::database(&part));
    }
    let dir = tempfile::tempdir().unwrap();
    let shop =
        spawn_shop_on(dir.path(), shop::launch::StoreLocation::Postgres { base_url: server.base_url() })
            .await;
    replicated(&shop).await;
    let order = ship(&shop, "c-cyd", "p-005").await;
    assert_eq!(settled(&shop).await.source, "live");

    let payment = kit::store::Store::open(&server.url("capshop_payment"), &[]).await.unwrap();
    let sql = format!("DELETE FROM authorizations WHERE order_id = '{order}'");
    payment.transact(move |tx| tx.execute(&sql, &[])).await.unwrap();
    let report = live_report(&shop).await;
    assert_eq!(
        kinds(&report).iter().map(|(kind, _, class)| (kind.as_str(), *class)).collect::<Vec<_>>(),
        [("order_without_authorization", Class::Defect)],
        "{}",
        report.table()
    );
    assert_eq!(report.broken_links, 1);
    finish(shop).await;
}

/// The authorization payment made for c-cyd's order, as payment answers it now.
async fn cyds_authorization(shop: &shop::launch::Shop) -> Value {
    let (_, listed) = get(shop, "/api/payment/authorizations?limit=10").await;
    let mut of_cyd = listed.as_array().unwrap().iter().filter(|a| a["customer_id"] == "c-cyd");
    of_cyd.next().cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_placement_whose_payment_answer_was_lost_is_in_flight_then_voided_not_a_defect() {
    let dir = tempfile::tempdir().unwrap();
    let shop = spawn_shop(dir.path()).await;
    replicated(&shop).await;
    post(&shop, "/api/order/carts/c-cyd/items", json!({ "product_id": "p-004", "quantity": 1 })).await;
    // Payment authorizes, and its answer is lost on the way back.
    shop.links["order->payment"].set(Faults { cut_in: true, ..Faults::default() });
    let (status, problem) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-cyd" })).await;
    assert_eq!(status, 503, "{problem}");
    shop.links["order->payment"].heal();
    let authorization = cyds_authorization(&shop).await;
    assert_eq!(authorization["status"], "authorized", "{authorization}");
    assert!(orders_of(&shop, "c-cyd").await.is_empty());

    let report = live_report(&shop).await;
    let found: Vec<&Finding> =
        report.findings.iter().filter(|f| f.kind == "authorization_without_order").collect();
    assert_eq!(found.len(), 1, "{report:?}");
    assert_eq!(found[0].class, Class::InFlight, "the placement is still held: {:?}", found[0]);

    // Abandoned after its bound, the placement is voided at payment: nothing is left.
    let voided = eventually("the lost placement's authorization to be voided", || async {
        let a = cyds_authorization(&shop).await;
        (a["status"] == "voided").then_some(a)
    })
    .await;
    assert_eq!(voided["authorization_id"], authorization["authorization_id"]);
    let report = settled(&shop).await;
    assert_eq!(report.defects, 0, "{report:?}");

    let (status, order) = post(&shop, "/api/order/orders", json!({ "customer_id": "c-cyd" })).await;
    assert_eq!(status, 201, "the cart was kept and a new placement goes through: {order}");
    finish(shop).await;
}
