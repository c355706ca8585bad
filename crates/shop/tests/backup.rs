//! Consistent backups of a running shop (docs/BACKUP.md): taken under concurrent checkout
//! load, restored into a fresh data dir, run: no defect anywhere, every order acknowledged
//! before the cut is there, every event in flight at the cut has its effect exactly once.
//! A damaged backup is refused, and a restore never writes over a shop.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::link::Faults;
use reqwest::Client;
use serde_json::{Value, json};
use shop::backup::{self, BackupError, Kind, Manifest};
use shop::facts;
use shop::reconcile::{self, Report};
use support::*;
use tokio_util::sync::CancellationToken;

const SHOPPERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];

/// Orders the shop acknowledged (201), with when the answer came.
type Placed = Arc<Mutex<Vec<(String, tokio::time::Instant)>>>;

/// One client per shopper placing orders until `stop`.
fn checkout_load(
    shop: &shop::launch::Shop,
    stop: CancellationToken,
) -> (Placed, Vec<tokio::task::JoinHandle<()>>) {
    let placed: Placed = Arc::default();
    let gateway = shop.gateway;
    let tasks = SHOPPERS
        .map(|customer| {
            let (placed, stop) = (placed.clone(), stop.clone());
            tokio::spawn(async move {
                let shop = Remote(format!("http://{gateway}"));
                while !stop.is_cancelled() {
                    let item = json!({ "product_id": "p-001", "quantity": 1 });
                    post(&shop, &format!("/api/order/carts/{customer}/items"), item).await;
                    let (status, order) =
                        post(&shop, "/api/order/orders", json!({ "customer_id": customer })).await;
                    if status == 201 {
                        let id = order["id"].as_str().unwrap_or_default().to_owned();
                        placed.lock().unwrap().push((id, tokio::time::Instant::now()));
                    }
                }
            })
        })
        .into();
    (placed, tasks)
}

struct Remote(String);

impl Gateway for Remote {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

async fn take(shop: &shop::launch::Shop, dir: &Path, kind: &str) -> (u16, Value) {
    let response = Client::new()
        .post(shop.url("/admin/backups"))
        .bearer_auth(TOKEN)
        .json(&json!({ "dir": dir.display().to_string(), "kind": kind }))
        .send()
        .await
        .expect("the gateway answers");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn live_report(shop: &shop::launch::Shop) -> Report {
    let response = Client::new().get(shop.url("/admin/reconcile")).bearer_auth(TOKEN).send().await.unwrap();
    response.json().await.expect("a report")
}

/// Waits until the restored shop has drained: no finding at all.
async fn drained(shop: &shop::launch::Shop) -> Report {
    let mut report = live_report(shop).await;
    for _ in 0..200 {
        if report.findings.is_empty() {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        report = live_report(shop).await;
    }
    panic!("the restored shop did not drain: {}", report.table());
}

async fn order_ids(shop: &shop::launch::Shop) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for customer in SHOPPERS {
        ids.extend(
            orders_of(shop, customer).await.iter().filter_map(|o| o["id"].as_str().map(str::to_owned)),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_checkout_load_restores_to_a_shop_without_defects_that_lost_no_acknowledged_order()
 {
    let dirs = tempfile::tempdir().unwrap();
    let live = spawn_shop(&dirs.path().join("live")).await;
    replicated(&live).await;
    let stop = CancellationToken::new();
    let (placed, load) = checkout_load(&live, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;

    let cut_asked = tokio::time::Instant::now();
    let dir = dirs.path().join("backup");
    let (status, manifest) = take(&live, &dir, "consistent").await;
    assert_eq!(status, 201, "{manifest}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    for task in load {
        task.await.unwrap();
    }
    let manifest: Manifest = serde_json::from_value(manifest).unwrap();
    assert_eq!(manifest.kind, Kind::Consistent);
    assert!(manifest.certificate.passed, "{:?}", manifest.certificate);
    assert_eq!(manifest.files.len(), 9, "eight service databases and the bus");
    let (_, listed) = get_admin(&live, "/admin/backups").await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let before_cut: Vec<String> =
        placed.lock().unwrap().iter().filter(|(_, at)| *at < cut_asked).map(|(id, _)| id.clone()).collect();
    assert!(!before_cut.is_empty(), "the load placed orders before the cut");
    finish(live).await;

    let files = reconcile::check(&facts::from_files(&dir).await.unwrap());
    assert_eq!(files.defects, 0, "the backup itself has no defect: {}", files.table());

    let restored_dir = dirs.path().join("restored");
    let restored = backup::restore(&dir, &restored_dir).await.unwrap();
    assert_eq!(restored.files, 9);
    let shop = spawn_shop(&restored_dir).await;
    let report = drained(&shop).await;
    assert!(report.is_clean(), "{}", report.table());
    let held = order_ids(&shop).await;
    let missing: Vec<&String> = before_cut.iter().filter(|id| !held.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "orders acknowledged before the cut are missing after the restore: {missing:?}"
    );
    finish(shop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_flight_at_the_cut_have_their_effect_exactly_once_after_the_restore() {
    let dirs = tempfile::tempdir().unwrap();
    let live = spawn_shop(&dirs.path().join("live")).await;
    replicated(&live).await;
    // Shipping cannot fetch: every order placed now is in flight for it at the cut.
    live.links["shipping->bus"].set(Faults { cut_out: true, cut_in: true, ..Faults::default() });
    let mut placed = Vec::new();
    for customer in SHOPPERS {
        post(
            &live,
            &format!("/api/order/carts/{customer}/items"),
            json!({ "product_id": "p-002", "quantity": 1 }),
        )
        .await;
        let (status, order) = post(&live, "/api/order/orders", json!({ "customer_id": customer })).await;
        assert_eq!(status, 201, "{order}");
        let id = order["id"].as_str().unwrap().to_owned();
        order_status(&live, &id, "confirmed").await;
        placed.push(id);
    }
    let dir = dirs.path().join("backup");
    let manifest = live.backups.as_ref().unwrap().create(&dir, Kind::Consistent).await.unwrap();
    let consumers = &manifest.positions.consumers;
    // A consumer that never applied an event of a stream has no position on it: 0.
    let shipping_behind =
        consumers.get("shipping.order-replica").and_then(|s| s.get("order")).copied().unwrap_or(0);
    assert!(shipping_behind < manifest.positions.streams["order"].committed, "{:?}", manifest.positions);
    live.links["shipping->bus"].set(Faults::default());
    finish(live).await;

    let restored_dir = dirs.path().join("restored");
    let restored = backup::restore(&dir, &restored_dir).await.unwrap();
    assert!(restored.in_flight > 0);
    let shop = spawn_shop(&restored_dir).await;
    for id in &placed {
        shipment(&shop, id, "shipped").await;
    }
    drained(&shop).await;
    for id in &placed {
        let (_, shipments) = get(&shop, &format!("/api/shipping/shipments?order_id={id}")).await;
        assert_eq!(shipments.as_array().map(Vec::len), Some(1), "one shipment for {id}: {shipments}");
    }
    finish(shop).await;
}

/// A stopped shop's backup, for the tests that damage it.
async fn stopped_backup(root: &Path) -> std::path::PathBuf {
    let shop = spawn_shop(&root.join("live")).await;
    replicated(&shop).await;
    let dir = root.join("backup");
    shop.backups.as_ref().unwrap().create(&dir, Kind::Consistent).await.unwrap();
    finish(shop).await;
    dir
}

#[tokio::test]
async fn a_backup_with_one_byte_changed_or_a_file_missing_is_refused_and_restores_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = stopped_backup(root.path()).await;
    backup::verify(&dir).await.expect("an untouched backup verifies");

    let file = dir.join("payment.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let target = root.path().join("restored");
    match backup::restore(&dir, &target).await {
        Err(BackupError::Damaged { file, what }) => {
            assert_eq!(file, "payment.db");
            assert!(what.contains("checksum"), "{what}");
        }
        other => panic!("a changed byte must be refused, got {:?}", other.map(|r| r.files)),
    }
    assert!(!target.exists(), "nothing was restored");

    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    std::fs::remove_file(dir.join("search.db")).unwrap();
    match backup::verify(&dir).await {
        Err(BackupError::Damaged { file, what }) => {
            assert_eq!((file.as_str(), what.as_str()), ("search.db", "missing"))
        }
        other => panic!("a missing file must be refused, got {:?}", other.map(|v| v.manifest.kind)),
    }
    let message = backup::verify(&dir).await.err().unwrap().to_string();
    assert!(message.contains("restore another one"), "the message says what to do: {message}");
}

#[tokio::test]
async fn a_restore_never_writes_into_a_data_dir_that_holds_a_shop_and_a_backup_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let dir = stopped_backup(root.path()).await;
    let occupied = root.path().join("live");
    let names = |dir: &Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".db"))
            .collect()
    };
    let before = names(&occupied);
    assert!(matches!(backup::restore(&dir, &occupied).await, Err(BackupError::Occupied(_))));
    assert_eq!(names(&occupied), before, "nothing was written into the shop's data dir");

    let shop = spawn_shop(&root.path().join("other")).await;
    let (status, problem) = take(&shop, &dir, "consistent").await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("not empty"), "{problem}");
    let (status, problem) = take(&shop, Path::new("relative/dir"), "consistent").await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = take(&shop, &root.path().join("b2"), "sideways").await;
    assert_eq!(status, 422, "an unknown kind is refused");
    let unauthorized = Client::new().get(shop.url("/admin/backups")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert!(!root.path().join("b2").exists());
    finish(shop).await;
}
