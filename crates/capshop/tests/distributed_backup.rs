//! Backups of the distributed mode (docs/BACKUP.md): every service a `capshop serve`
//! process on its own PostgreSQL database, NATS JetStream between them. Under checkout
//! load the gateway takes five consistent backups (every process's pause held while each
//! database exports its snapshot; their pauses printed) and reconciles at a cut; the first
//! restores with `capshop restore --database-url` into a fresh server, its services run on
//! a fresh NATS with the stream prefix the restore printed, and the restored shop
//! converges with no defect, every acknowledged order there and every event applied once. Naive backups (each database
//! dumped one after another, no pause) are kept whatever their certificate says, and
//! whether one failed it is reported.

#![allow(clippy::print_stderr, reason = "the test reports the figures docs/BACKUP.md quotes")]

mod deployment;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployment::{Deployment, TOKEN, support};
use serde_json::{Value, json};

const SHOPPERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];
/// How many consistent backups are taken under the load, for their pause figures.
const CONSISTENT: usize = 5;

/// Orders answered 201, with when the answer came.
type Placed = Arc<Mutex<Vec<(String, Instant)>>>;

/// Three shoppers checking out without pause until `stop`.
fn load(shop: &Arc<Deployment>, stop: &Arc<AtomicBool>, placed: &Placed) -> tokio::task::JoinSet<()> {
    let mut shoppers = tokio::task::JoinSet::new();
    for (n, customer) in SHOPPERS.into_iter().enumerate() {
        let (shop, stop, placed) = (shop.clone(), stop.clone(), placed.clone());
        shoppers.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let line = json!({ "product_id": format!("p-{:03}", 1 + (n * 7 + i) % 20), "quantity": 1 });
                let (status, _) = shop.post(&format!("/api/order/carts/{customer}/items"), line).await;
                if status != 200 {
                    continue;
                }
                let (status, order) =
                    shop.post("/api/order/orders", json!({ "customer_id": customer })).await;
                if status == 201 {
                    let id = order["id"].as_str().expect("an order has an id").to_owned();
                    placed.lock().unwrap().push((id, Instant::now()));
                }
            }
        });
    }
    shoppers
}

async fn admin(shop: &Deployment, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let answer = client
        .request(method, support::Gateway::url(shop, path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_checkout_load_restores_to_a_shop_with_no_defect_that_lost_nothing() {
    let Some(shop) = Deployment::start().await else { return };
    shop.replicated().await;
    let shop = Arc::new(shop);
    let (stop, placed): (Arc<AtomicBool>, Placed) = Default::default();
    let mut shoppers = load(&shop, &stop, &placed);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dir = tempfile::tempdir().unwrap();
    let asked = Instant::now();
    // Consistent backups back to back, each certified; the first is restored below.
    let mut manifests = Vec::new();
    for n in 1..=CONSISTENT {
        let into = dir.path().join(format!("backup-{n}")).display().to_string();
        let (status, manifest) =
            admin(&shop, reqwest::Method::POST, "/admin/backups", json!({ "dir": into })).await;
        assert_eq!(status, 201, "{manifest}");
        assert_eq!(manifest["certificate"]["passed"], true, "{manifest}");
        manifests.push(manifest);
    }
    let backup = dir.path().join("backup-1");
    let manifest = manifests[0].clone();
    // Reconcile at a cut while the load goes on: in flight is fine, a defect is not.
    let (status, report) = admin(&shop, reqwest::Method::GET, "/admin/reconcile", Value::Null).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["source"], "cut", "{report}");
    assert_eq!(report["defects"], 0, "{report:#}");
    // Naive backups (no pause, one database after another) until one fails its
    // certificate: a consumer dumped after its producer has applied what the producer's
    // dump does not hold. Whether one does depends on the load and the machine's speed (a
    // debug build here fails one within five; a release build on a quiet machine passed
    // fifteen in a row), so it is shown, not asserted: the certificate's catching damage is
    // asserted by scenario `backup` (embedded) and the certificate's own tests.
    let mut naive_failed = None;
    for n in 1..=5 {
        let naive = dir.path().join(format!("naive-{n}"));
        let body = json!({ "dir": naive.display().to_string(), "kind": "naive" });
        let (status, naive) = admin(&shop, reqwest::Method::POST, "/admin/backups", body).await;
        assert_eq!(status, 201, "a naive backup is kept whatever its certificate says: {naive}");
        if naive["certificate"]["passed"] == false {
            naive_failed = Some(naive["certificate"].clone());
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    while shoppers.join_next().await.is_some() {}

    assert_eq!(manifest["deployment"], "distributed", "{manifest}");
    print_pauses(&manifests);
    let files: Vec<&str> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert!(files.contains(&"order.dump") && files.contains(&"events/order.jsonl"), "{files:?}");
    match &naive_failed {
        Some(certificate) => eprintln!("naive certificate: {certificate}"),
        None => eprintln!("naive certificate: five naive backups passed it under this load"),
    }

    let acknowledged: Vec<String> =
        placed.lock().unwrap().iter().filter(|(_, at)| *at < asked).map(|(id, _)| id.clone()).collect();
    assert!(!acknowledged.is_empty(), "orders were placed before the backup");
    drop(shoppers);
    drop(Arc::try_unwrap(shop).ok().expect("the shoppers are done"));

    let Some((restored, summary)) = Deployment::restored(&backup).await else { return };
    eprintln!(
        "restored with --database-url in {:.0} ms, {} events in flight at the cut, stream prefix {}",
        summary["restore_ms"], summary["in_flight"], summary["stream_prefix"]
    );
    // Every consumer applies everything its producers committed, once (inbox floors).
    restored.nothing_lost_nothing_twice().await;
    let (_, report) = admin(&restored, reqwest::Method::GET, "/admin/reconcile", Value::Null).await;
    eprintln!("the restored shop reconciled: {report}");
    restored.reconciled().await;
    for id in &acknowledged {
        let (status, order) = restored.get(&format!("/api/order/orders/{id}")).await;
        assert_eq!(status, 200, "order {id}, acknowledged before the cut, is in the restore: {order}");
    }
    // The restored shop takes new orders, which are confirmed and shipped.
    let id = restored.place_order("c-ada", "p-002").await;
    restored.order_status(&id, "confirmed").await;
    restored.reconciled().await;
    // Onto the same server again: its databases hold the shop now.
    let (done, said) = capshop_restore(&backup, &["--database-url", &restored.pg.base_url()]);
    assert!(
        !done && said.contains("the database capshop_") && said.contains("already holds a shop"),
        "{said}"
    );
    let (done, said) = capshop_restore(&backup, &["--database-url", &restored.pg.url("capshop_order")]);
    assert!(!done && said.contains("give the server only"), "a URL naming a database is refused: {said}");
    drop(restored);
    restores_from_the_command_line(dir.path(), &backup);
}

/// Runs `capshop restore BACKUP ARGS...`: whether it succeeded, and what it printed.
fn capshop_restore(backup: &std::path::Path, args: &[&str]) -> (bool, String) {
    let done = std::process::Command::new(env!("CARGO_BIN_EXE_capshop"))
        .arg("restore")
        .arg(backup)
        .args(args)
        .output()
        .expect("capshop restore runs");
    let said = String::from_utf8_lossy(&done.stdout).into_owned() + &String::from_utf8_lossy(&done.stderr);
    (done.status.success(), said)
}

/// Prints every consistent backup's pause and where it went, then their p50 and max.
fn print_pauses(manifests: &[Value]) {
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut pauses = Vec::new();
    for manifest in manifests {
        let pause = ms(&manifest["pause_ms"]);
        assert!(pause < 2000.0, "the pauses were held {pause} ms");
        let steps = &manifest["pause_steps"];
        // The longest of a map of ms, and whose it is.
        let longest = |field: &str| {
            let entries = steps[field].as_object().into_iter().flatten();
            entries.map(|(k, v)| (ms(v), k.clone())).max_by(|a, b| a.0.total_cmp(&b.0)).unwrap_or_default()
        };
        let (waited, waiter) = longest("waited_ms");
        eprintln!(
            "consistent backup: pause {pause:.1} ms (holds answered at {:.1} ms, {waiter} having waited {waited:.1} ms for its passages under way; snapshots pinned by {:.1} ms; released at {:.1} ms), {:.0} ms in all",
            ms(&steps["holds_answered_ms"]),
            longest("pinned_ms").0,
            ms(&steps["released_ms"]),
            ms(&manifest["total_ms"]),
        );
        pauses.push(pause);
    }
    pauses.sort_by(f64::total_cmp);
    let (p50, max) = (pauses[(pauses.len() - 1) / 2], pauses[pauses.len() - 1]);
    eprintln!("pauses: {pauses:.1?} ms; p50 {p50:.1} ms, max {max:.1} ms");
}

/// `capshop restore --data-dir` of the backup: a cluster of its own made in the new dir;
/// a second restore into it, and a backup with one byte changed, are refused.
fn restores_from_the_command_line(dir: &std::path::Path, backup: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    // As root, PostgreSQL runs as nobody, who must be able to reach the data dir.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let restore = |from: &std::path::Path, into: &std::path::Path| {
        capshop_restore(from, &["--data-dir", &into.display().to_string()])
    };
    let new = dir.join("restored");
    let (done, said) = restore(backup, &new);
    assert!(done, "{said}");
    assert!(said.contains("capshop up --distributed --data-dir"), "says how to run it: {said}");
    assert!(new.join("postgres").join("PG_VERSION").is_file(), "{said}");
    let (done, said) = restore(backup, &new);
    assert!(!done && said.contains("already holds a shop"), "{said}");

    let damaged = dir.join("damaged");
    std::fs::create_dir_all(damaged.join("events")).unwrap();
    for entry in std::fs::read_dir(backup).unwrap().chain(std::fs::read_dir(backup.join("events")).unwrap()) {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, damaged.join(path.strip_prefix(backup).unwrap())).unwrap();
        }
    }
    let mut bytes = std::fs::read(damaged.join("order.dump")).unwrap();
    bytes[100] ^= 1;
    std::fs::write(damaged.join("order.dump"), bytes).unwrap();
    let into = dir.join("from-damaged");
    let (done, said) = restore(&damaged, &into);
    assert!(!done && said.contains("order.dump of the backup is damaged"), "{said}");
    assert!(!into.exists(), "nothing was written: {said}");
}
