//! Scenario "cache down" (seed 003): the catalog's popularity cache fails (its link is
//! cut). `GET /popular` degrades at once to `limited: true`; nothing else fails. After
//! the link heals, popular products come back in full.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use shop::chaos::CACHE;
use shop::service::Choices;
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load};
use super::timeline::ratio;

/// Everything else a shopper does: browse, check out, place the order.
async fn shop_around(shop: &LabShop, worker: usize, n: u64) -> bool {
    let customer = ["c-ada", "c-bob"][worker % 2];
    let products = shop.get("/api/catalog/products").await;
    let (cart, placed) = shop.checkout(customer, &format!("p-{:03}", 1 + n % 20), json!({})).await;
    products.ok() && cart.ok() && placed.status == 201
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let limited = Arc::new(Mutex::new(Vec::<(f64, bool)>::new()));
    let popular = Load::start(&lab.timeline, "popular", 1, &shop, {
        let (limited, timeline) = (limited.clone(), lab.timeline.clone());
        move |shop, _, _| {
            let (limited, timeline) = (limited.clone(), timeline.clone());
            async move {
                let started = timeline.now();
                let answer = shop.get("/api/catalog/popular").await;
                let flag = answer.body["limited"] == true;
                limited.lock().unwrap_or_else(PoisonError::into_inner).push((started, flag));
                answer.ok()
            }
        }
    });
    let others = Load::start(&lab.timeline, "everything else", 2, &shop, |shop, worker, n| async move {
        shop_around(&shop, worker, n).await
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    shop.shop.chaos.cut("catalog", CACHE, false)?;
    let from = lab.timeline.fault_begins("catalog cache cut");
    tokio::time::sleep(lab.phase(1.5, 6.0)).await;
    let to = lab.timeline.now();
    shop.shop.chaos.heal("catalog", CACHE)?;
    lab.timeline.fault_ends();
    let healed = Instant::now();
    let mut recovered_after = None;
    while recovered_after.is_none() && healed.elapsed() < Duration::from_secs(30) {
        let last = limited.lock().unwrap_or_else(PoisonError::into_inner).last().copied();
        if last.is_some_and(|(t, flag)| t > to && !flag) {
            recovered_after = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    popular.stop().await;
    others.stop().await;
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;

    let flags: Vec<bool> = limited
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, flag)| *flag)
        .collect();
    let limited_ratio =
        if flags.is_empty() { 0.0 } else { flags.iter().filter(|f| **f).count() as f64 / flags.len() as f64 };
    let popular_ok = ratio(&lab.timeline.attempts("popular", from, to));
    let others_ok = ratio(&lab.timeline.attempts("everything else", from, to));
    let mut report = Report::default();
    report.line(format!("popular requests while the cache was cut  {}", flags.len()));
    report
        .line(format!("  answered                                {:.1}%", popular_ok.unwrap_or(0.0) * 100.0));
    report.line(format!("  limited: true                           {:.1}%", limited_ratio * 100.0));
    report.line(format!(
        "everything else meanwhile (browse, order) {} calls, {:.1}% succeeded",
        lab.timeline.attempts("everything else", from, to).len(),
        others_ok.unwrap_or(0.0) * 100.0
    ));
    report.line(format!(
        "popular in full again after the heal      {}",
        recovered_after.map_or("never".into(), |d| format!(
            "{:.3} s (its breaker probes 5 s after it opened)",
            d.as_secs_f64()
        ))
    ));
    report.line(format!("events lost                               {}", lost.lost));
    report.figure("popular_requests", flags.len());
    report.figure("limited_ratio", limited_ratio);
    report.figure("popular_success_ratio", popular_ok.unwrap_or(0.0));
    report.figure("other_success_ratio", others_ok.unwrap_or(0.0));
    report.figure("recovered_after_s", recovered_after.map_or(-1.0, |d| d.as_secs_f64()));
    report.check(
        "every popular request during the cut was answered, limited",
        popular_ok == Some(1.0) && limited_ratio == 1.0,
    );
    report.check("nothing else failed", others_ok == Some(1.0));
    report.check("popular products came back in full after the heal", recovered_after.is_some());
    report.losses(&lost);
    Ok(report)
}
