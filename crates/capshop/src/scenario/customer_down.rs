//! Scenario 1 (DESIGN §4): the customer service stops while shoppers check out. With the
//! address served from the order service's replica checkouts go on; with the address
//! fetched synchronously (the consistent choice) they all fail. Run once per choice.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use shop::service::{AddressChoice, Choices, Part, ServiceName};

use super::Report;
use super::measure::Lost;
use super::lab::{Lab, LabShop, Load};
use super::timeline::ratio;

const CUSTOMERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];

/// What one choice did while the customer service was down.
struct Outcome {
    ratio: Option<f64>,
    attempts: usize,
    /// Checkouts answered from the replica while the owner was down, and the oldest.
    stale_answers: u64,
    max_staleness_ms: u64,
    convergence_s: f64,
    lost: Lost,
}

/// One checkout: show it (recording where the address came from), then place the order.
async fn checkout(shop: &LabShop, worker: usize, n: u64, seen: &Mutex<Vec<u64>>) -> bool {
    let customer = CUSTOMERS[worker % CUSTOMERS.len()];
    let shown = shop.get(&format!("/api/order/checkout/{customer}")).await;
    if shown.ok() && shown.body["address_source"]["source"] == "replica" {
        let age = shown.body["address_source"]["age_ms"].as_u64().unwrap_or(0);
        seen.lock().unwrap_or_else(PoisonError::into_inner).push(age);
    }
    let product = format!("p-{:03}", 1 + n % 20);
    let (_, placed) = shop.checkout(customer, &product, json!({})).await;
    shown.ok() && placed.status == 201
}

async fn run_choice(lab: &Lab, series: &str, address: AddressChoice) -> anyhow::Result<Outcome> {
    let shop = lab.shop(series, Choices { address, ..Choices::default() }).await?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let attempt = {
        let seen = seen.clone();
        move |shop: Arc<LabShop>, worker, n| {
            let seen = seen.clone();
            async move { checkout(&shop, worker, n, &seen).await }
        }
    };
    let load = Load::start(&lab.timeline, series, CUSTOMERS.len(), &shop, attempt.clone());
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    shop.shop.chaos.stop(Part::Service(ServiceName::Customer)).await?;
    seen.lock().unwrap_or_else(PoisonError::into_inner).clear();
    let from = lab.timeline.fault_begins(&format!("{series}: customer stopped"));
    tokio::time::sleep(lab.phase(1.5, 6.0)).await;
    let to = lab.timeline.now();
    load.stop().await;
    let during: Vec<_> = lab
        .timeline
        .attempts(series, from, to)
        .into_iter()
        .filter(|a| a.t - a.latency.as_secs_f64() >= from)
        .collect();
    let ages = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));

    shop.shop.chaos.start(Part::Service(ServiceName::Customer)).await?;
    lab.timeline.fault_ends();
    let convergence = shop.converge(Duration::from_secs(60)).await?;
    let after = Load::start(&lab.timeline, series, CUSTOMERS.len(), &shop, attempt);
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    after.stop().await;
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;
    Ok(Outcome {
        ratio: ratio(&during),
        attempts: during.len(),
        stale_answers: ages.len() as u64,
        max_staleness_ms: ages.iter().copied().max().unwrap_or(0),
        convergence_s: convergence.as_secs_f64(),
        lost,
    })
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let replica = run_choice(lab, "replica", AddressChoice::Replica).await?;
    let sync = run_choice(lab, "sync", AddressChoice::Sync).await?;
    let mut report = Report::default();
    let show = |r: Option<f64>| r.map_or("no attempts".to_owned(), |r| format!("{r:.3}"));
    report.line(format!("{:<44} {:>12} {:>12}", "while the customer service was stopped", "replica", "sync"));
    report.line(format!("{:<44} {:>12} {:>12}", "checkouts attempted", replica.attempts, sync.attempts));
    report.line(format!(
        "{:<44} {:>12} {:>12}",
        "checkout success ratio",
        show(replica.ratio),
        show(sync.ratio)
    ));
    report.line(format!(
        "{:<44} {:>12} {:>12}",
        "answers served from the replica (stale)", replica.stale_answers, sync.stale_answers
    ));
    report.line(format!(
        "{:<44} {:>12} {:>12}",
        "max staleness of those answers (ms)", replica.max_staleness_ms, sync.max_staleness_ms
    ));
    report.line(format!(
        "{:<44} {:>12.3} {:>12.3}",
        "convergence after restart (s)", replica.convergence_s, sync.convergence_s
    ));
    report.line(format!("{:<44} {:>12} {:>12}", "events lost", replica.lost.lost, sync.lost.lost));
    report.figure("success_ratio_replica", replica.ratio.unwrap_or(0.0));
    report.figure("success_ratio_sync", sync.ratio.unwrap_or(0.0));
    report.figure("checkouts_replica", replica.attempts);
    report.figure("checkouts_sync", sync.attempts);
    report.figure("stale_answers", replica.stale_answers);
    report.figure("max_staleness_ms", replica.max_staleness_ms);
    report.figure("convergence_s", replica.convergence_s);
    report.figure("convergence_s_sync", sync.convergence_s);
    report.check(
        "with the replica, checkouts succeed while the customer service is down",
        replica.ratio.is_some_and(|r| r >= 0.99),
    );
    report.check(
        "with the synchronous address, checkouts fail while the customer service is down",
        sync.ratio.is_some_and(|r| r <= 0.01),
    );
    report.losses(&replica.lost.merge(sync.lost));
    Ok(report)
}
