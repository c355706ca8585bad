//! Scenario 8 (DESIGN §4, seed 004): under steady checkout load, take consistent backups
//! back to back and a naive one, restore each into a fresh data dir, let each run, and
//! reconcile both. The consistent one restores without a broken link or orphan and loses
//! nothing acknowledged before its cut; the naive one shows the damage seed 004 describes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use shop::backup::Manifest;
use shop::contracts::facts::ServiceFacts;
use shop::reconcile::{Class, Group, Report as Reconciled};
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load};
use super::timeline::{Attempt, percentile};

const CUSTOMERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];
/// Naive backups taken until one shows damage (each is one real copy under the load).
const NAIVE_TRIES: usize = 5;

/// Orders the shop acknowledged, with when the answer came.
type Placed = Arc<Mutex<Vec<(String, Instant)>>>;

async fn checkout(shop: &LabShop, worker: usize, n: u64, placed: &Placed) -> bool {
    let customer = CUSTOMERS[worker % CUSTOMERS.len()];
    let product = format!("p-{:03}", 1 + n % 20);
    let (_, answer) = shop.checkout(customer, &product, json!({})).await;
    if answer.status == 201
        && let Some(id) = answer.body["id"].as_str()
    {
        placed.lock().unwrap_or_else(PoisonError::into_inner).push((id.to_owned(), Instant::now()));
    }
    answer.status == 201
}

/// Asks the gateway for a backup, as `capshop backup create` does.
async fn take(shop: &LabShop, dir: &Path, kind: &str) -> anyhow::Result<Manifest> {
    let body = json!({ "dir": dir.display().to_string(), "kind": kind });
    let answer = shop.expect(&format!("a {kind} backup"), shop.post("/admin/backups", &body).await).await?;
    serde_json::from_value(answer.body).context("the gateway's answer is not a manifest")
}

/// The reconcile report of a running shop, and the orders it holds.
async fn reconcile(shop: &shop::launch::Shop) -> anyhow::Result<(Reconciled, BTreeSet<String>)> {
    let facts = shop::facts::from_local(&shop::facts::LocalParts::new(&shop.parts)).await?;
    let mut orders = BTreeSet::new();
    for part in &facts.parts {
        if let ServiceFacts::Order { orders: held, .. } = &part.state {
            orders.extend(held.iter().map(|o| o.id.clone()));
        }
    }
    Ok((shop::reconcile::check(&facts), orders))
}

/// Lets a restored shop run until reconcile finds nothing in flight (or `within` passes).
async fn settled(shop: &shop::launch::Shop, within: Duration) -> anyhow::Result<(Reconciled, BTreeSet<String>)> {
    let started = Instant::now();
    loop {
        let (report, orders) = reconcile(shop).await?;
        if report.in_flight == 0 || started.elapsed() > within {
            return Ok((report, orders));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A few defects, broken links and orphans first.
fn examples(report: &Reconciled) -> Vec<Value> {
    let damage = |g: Group| !matches!(g, Group::BrokenLink | Group::Orphan);
    let mut defects: Vec<_> = report.findings.iter().filter(|f| f.class == Class::Defect).collect();
    defects.sort_by_key(|f| damage(f.group));
    defects
        .into_iter()
        .take(5)
        .map(|f| json!({ "kind": f.kind, "keys": f.keys, "detail": f.detail }))
        .collect()
}

fn p99(attempts: &[Attempt]) -> f64 {
    percentile(attempts.iter().map(|a| a.latency).collect(), 0.99)
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let live = lab.shop("live", shop::service::Choices::default()).await?;
    let placed: Placed = Arc::default();
    let attempt = {
        let placed = placed.clone();
        move |shop: Arc<LabShop>, worker, n| {
            let placed = placed.clone();
            async move { checkout(&shop, worker, n, &placed).await }
        }
    };
    // One client per shopper: two on one cart would race for its items.
    let load = Load::start(&lab.timeline, "live", CUSTOMERS.len(), &live, attempt);
    tokio::time::sleep(lab.phase(1.0, 5.0)).await;
    let before_from = lab.timeline.now() - lab.phase(0.8, 4.0).as_secs_f64();
    let before = lab.timeline.attempts("live", before_from, lab.timeline.now());

    // Consistent backups back to back, so the writes during them are enough to measure.
    let cut_asked = Instant::now();
    let from = lab.timeline.fault_begins("consistent backups");
    let busy = lab.phase(1.0, 5.0);
    let mut manifests = Vec::new();
    while manifests.is_empty() || cut_asked.elapsed() < busy {
        let dir = lab.data_dir(&format!("backup-{}", manifests.len() + 1));
        manifests.push((dir.clone(), take(&live, &dir, "consistent").await?));
    }
    let to = lab.timeline.fault_ends();
    let during: Vec<Attempt> =
        lab.timeline.attempts("live", from, to).into_iter().filter(|a| a.t - a.latency.as_secs_f64() >= from).collect();

    lab.timeline.fault_begins("naive backups");
    let mut naive = Vec::new();
    for n in 1..=NAIVE_TRIES {
        let dir = lab.data_dir(&format!("naive-{n}"));
        let manifest = take(&live, &dir, "naive").await?;
        let damaged = !manifest.certificate.passed;
        naive.push((dir, manifest));
        if damaged {
            break;
        }
    }
    lab.timeline.fault_ends();
    load.stop().await;
    let acknowledged: Vec<(String, Instant)> =
        std::mem::take(&mut *placed.lock().unwrap_or_else(PoisonError::into_inner));
    live.converge(Duration::from_secs(60)).await?;
    live.stop().await?;

    let (consistent_dir, consistent) = manifests.first().cloned().context("a consistent backup")?;
    let restored_at = lab.data_dir("restored-consistent");
    let restored = shop::backup::restore(&consistent_dir, &restored_at).await?;
    let restored_shop = lab.shop("restored-consistent", shop::service::Choices::default()).await?;
    restored_shop.converge(Duration::from_secs(60)).await?;
    // The shop runs on from its restore: new orders go through, and are checked for loss.
    let after = Load::start(&lab.timeline, "restored-consistent", CUSTOMERS.len(), &restored_shop, {
        let placed = Placed::default();
        move |shop: Arc<LabShop>, worker, n| {
            let placed = placed.clone();
            async move { checkout(&shop, worker, n, &placed).await }
        }
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    after.stop().await;
    restored_shop.converge(Duration::from_secs(60)).await?;
    let (consistent_report, held) = reconcile(&restored_shop.shop).await?;
    let lost = restored_shop.lost().await?;
    // Every order acknowledged before the first cut was asked for must be in its restore.
    let missing: Vec<&String> =
        acknowledged.iter().filter(|(_, at)| *at < cut_asked).map(|(id, _)| id).filter(|id| !held.contains(*id)).collect();
    restored_shop.stop().await?;

    let (naive_dir, naive_manifest) = naive.last().cloned().context("a naive backup")?;
    let naive_at = lab.data_dir("restored-naive");
    shop::backup::restore(&naive_dir, &naive_at).await?;
    let naive_shop = lab.bare_shop("restored-naive").await?;
    let (naive_report, _) = settled(&naive_shop, lab.phase(5.0, 20.0)).await?;
    naive_shop.stop().await?;

    let pause_ms = manifests.iter().map(|(_, m)| m.pause_ms).fold(0.0, f64::max);
    let write_errors = during.iter().filter(|a| !a.ok).count();
    let (p99_before, p99_during) = (p99(&before), p99(&during));
    if before.is_empty() || during.is_empty() {
        bail!("the load made no checkout to compare (before: {}, during: {})", before.len(), during.len());
    }

    let mut report = Report::default();
    report.line(format!(
        "{} consistent backups under load: consumers held at most {pause_ms:.2} ms (target <= 50), the first took {:.0} ms",
        manifests.len(),
        consistent.total_ms
    ));
    report.line(format!(
        "checkout p99 before {p99_before:.1} ms, during the backups {p99_during:.1} ms (target <= 1.5x), {write_errors} of {} checkouts failed during them",
        during.len()
    ));
    report.line(format!(
        "consistent restore: {} events in flight at the cut delivered, {} dropped that were not committed, {:.0} ms",
        restored.in_flight, restored.dropped_uncommitted, restored.restore_ms
    ));
    report.line(format!(
        "reconcile after the consistent restore: {} broken links, {} orphans, {} replica mismatches, {} defects",
        consistent_report.broken_links, consistent_report.orphans, consistent_report.replica_mismatches, consistent_report.defects
    ));
    report.line(format!(
        "reconcile after the naive restore ({} naive backup(s) taken): {} broken links, {} orphans, {} replica mismatches, {} defects",
        naive.len(),
        naive_report.broken_links,
        naive_report.orphans,
        naive_report.replica_mismatches,
        naive_report.defects
    ));
    for example in examples(&naive_report) {
        report.line(format!("  naive: {} {}", example["kind"], example["detail"].as_str().unwrap_or_default()));
    }
    if !naive_manifest.certificate.passed {
        for failure in naive_manifest.certificate.failures().iter().take(3) {
            report.line(format!("  naive certificate: {failure}"));
        }
    }
    report.figure("consistent_broken_links", consistent_report.broken_links);
    report.figure("consistent_orphans", consistent_report.orphans);
    report.figure("consistent_defects", consistent_report.defects);
    report.figure("naive_broken_links", naive_report.broken_links);
    report.figure("naive_orphans", naive_report.orphans);
    report.figure("naive_defects", naive_report.defects);
    report.figure("naive_examples", examples(&naive_report));
    report.figure("naive_certificate_passed", naive_manifest.certificate.passed);
    report.figure("pause_ms", pause_ms);
    report.figure("backup_s", consistent.total_ms / 1e3);
    report.figure("backups_taken", manifests.len());
    report.figure("restore_s", restored.restore_ms / 1e3);
    report.figure("in_flight_at_cut", restored.in_flight);
    report.figure("write_p99_ms_before", p99_before);
    report.figure("write_p99_ms_during", p99_during);
    report.figure("write_errors_during", write_errors);
    report.figure("acknowledged_orders_missing", missing.len());
    report.figure("pause_target_met", pause_ms <= 50.0);
    report.figure("write_p99_target_met", p99_during <= 1.5 * p99_before);
    report.check(
        "the consistent backup restores without a broken link, an orphan or any other defect",
        consistent_report.defects == 0,
    );
    report.check("no checkout failed while the backups ran", write_errors == 0);
    report.check(
        "every order acknowledged before the cut is in the restored shop",
        missing.is_empty(),
    );
    report.check(
        "the naive backup shows what seed 004 warns about (a failed certificate or damage after its restore)",
        !naive_manifest.certificate.passed || naive_report.defects > 0,
    );
    report.losses(&lost);
    Ok(report)
}
