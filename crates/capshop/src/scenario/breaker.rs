//! Scenario 7 (DESIGN §4): the catalog becomes slow (latency on `order->catalog` beyond
//! the call timeout). The order service's breaker opens, checkouts come back at once with
//! a degraded answer (the total unconfirmed, with the reason) instead of waiting, and the
//! breaker closes again after the catalog recovers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kit::breaker::BreakerState;
use serde_json::json;
use shop::service::{Choices, ServiceName};
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load};
use super::timeline::{percentile, ratio};

const CUSTOMERS: [&str; 3] = ["c-ada", "c-bob", "c-cyd"];

/// One checkout answer: whether its total was confirmed, why not, and how long it took.
#[derive(Clone)]
struct Shown {
    confirmed: bool,
    circuit_open: bool,
    latency: Duration,
}

async fn show(shop: &LabShop, worker: usize, seen: &Mutex<Vec<Shown>>) -> bool {
    let answer = shop.get(&format!("/api/order/checkout/{}", CUSTOMERS[worker % CUSTOMERS.len()])).await;
    let total = &answer.body["total"];
    let circuit_open = total["reason"].as_str().is_some_and(|r| r.contains("is open"));
    let shown = Shown { confirmed: total["confirmed"] == true, circuit_open, latency: answer.latency };
    seen.lock().unwrap_or_else(PoisonError::into_inner).push(shown);
    answer.ok()
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    for customer in CUSTOMERS {
        let item = json!({ "product_id": "p-001", "quantity": 1 });
        shop.expect("filling a cart", shop.post(&format!("/api/order/carts/{customer}/items"), &item).await)
            .await?;
    }
    let breaker = shop.shop.contexts[&ServiceName::Order].peer(ServiceName::Catalog).breaker().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let load = Load::start(&lab.timeline, "checkouts", CUSTOMERS.len(), &shop, {
        let seen = seen.clone();
        move |shop, worker, _| {
            let seen = seen.clone();
            async move { show(&shop, worker, &seen).await }
        }
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    let healthy = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));

    let slow = Duration::from_millis(1500);
    shop.shop.chaos.latency("order", "catalog", slow)?;
    let from = lab.timeline.fault_begins("catalog slowed by 1.5 s");
    let started = Instant::now();
    let mut opened_after = None;
    while started.elapsed() < lab.phase(4.0, 10.0) {
        if opened_after.is_none() && breaker.state() == BreakerState::Open {
            opened_after = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = lab.timeline.attempts("checkouts", from, lab.timeline.now());
    let slowed = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));

    shop.shop.chaos.heal("order", "catalog")?;
    lab.timeline.fault_ends();
    let healed = Instant::now();
    let mut closed_after = None;
    while closed_after.is_none() && healed.elapsed() < Duration::from_secs(30) {
        let confirmed =
            seen.lock().unwrap_or_else(PoisonError::into_inner).last().is_some_and(|s| s.confirmed);
        if breaker.state() == BreakerState::Closed && confirmed {
            closed_after = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    load.stop().await;
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;

    let fast: Vec<Duration> =
        slowed.iter().filter(|s| s.circuit_open && !s.confirmed).map(|s| s.latency).collect();
    let waited: Vec<Duration> =
        slowed.iter().filter(|s| !s.circuit_open && !s.confirmed).map(|s| s.latency).collect();
    let normal: Vec<Duration> = healthy.iter().map(|s| s.latency).collect();
    let mut report = Report::default();
    report
        .line(format!("checkout latency before (p50)             {:.1} ms", percentile(normal.clone(), 0.5)));
    report.line(format!(
        "breaker opened after                      {}",
        opened_after.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()))
    ));
    report.line(format!(
        "degraded answers that waited for timeout  {} (p50 {:.0} ms)",
        waited.len(),
        percentile(waited.clone(), 0.5)
    ));
    report.line(format!(
        "degraded answers with the breaker open    {} (p50 {:.1} ms, max {:.1} ms)",
        fast.len(),
        percentile(fast.clone(), 0.5),
        percentile(fast.clone(), 1.0)
    ));
    report.line(format!(
        "checkouts answered (200) while slow       {}",
        ratio(&during).map_or("none".into(), |r| format!("{:.1}%", r * 100.0))
    ));
    report.line(format!(
        "breaker closed again after recovery       {}",
        closed_after.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()))
    ));
    report.line(format!("events lost                               {}", lost.lost));
    report.figure("opened_after_s", opened_after.map_or(-1.0, |d| d.as_secs_f64()));
    report.figure("degraded_open_answers", fast.len());
    report.figure("degraded_open_p50_ms", percentile(fast.clone(), 0.5));
    report.figure("degraded_open_max_ms", percentile(fast.clone(), 1.0));
    report.figure("degraded_timeout_answers", waited.len());
    report.figure("degraded_timeout_p50_ms", percentile(waited, 0.5));
    report.figure("healthy_p50_ms", percentile(normal, 0.5));
    report.figure("closed_after_s", closed_after.map_or(-1.0, |d| d.as_secs_f64()));
    report.figure("success_ratio", ratio(&during).unwrap_or(0.0));
    report.check("the breaker opened while the catalog was slow", opened_after.is_some());
    report.check(
        "with the breaker open, checkouts got a degraded answer (total unconfirmed)",
        !fast.is_empty(),
    );
    report.check("every checkout was answered while the catalog was slow", ratio(&during) == Some(1.0));
    report.check("the breaker closed and totals were confirmed again after recovery", closed_after.is_some());
    report.losses(&lost);
    Ok(report)
}
