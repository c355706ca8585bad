//! Scenario 4 (DESIGN §4): search cannot index a product (its name holds `#poison`). The
//! event is retried with growing gaps, becomes a dead letter of `search.catalog`, and
//! every other event flows on; the product is fixed (renamed), the dead letter replayed
//! (a harmless no-op now), and the index catches up. Lag is sampled throughout.

use std::time::Duration;

use serde_json::json;
use shop::service::Choices;
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load};

const CONSUMER: &str = "search.catalog";

/// Keeps the catalog stream busy: price changes of p-002 … p-010.
async fn change_price(shop: &LabShop, n: u64) -> bool {
    let product = format!("p-{:03}", 2 + n % 9);
    shop.put(&format!("/api/catalog/products/{product}/price"), &json!({ "price_cents": 1000 + n % 500 }))
        .await
        .ok()
}

/// Whether the index holds the product titled `title` at `version`.
async fn indexed_as(shop: &LabShop, title: &str, version: u64) -> bool {
    let found = shop.get(&format!("/api/search/search?q={}", title.replace(' ', "+"))).await;
    found.body["results"]
        .as_array()
        .is_some_and(|hits| hits.iter().any(|h| h["title"] == title && h["version"] == version))
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let load = Load::start(&lab.timeline, "catalog writes", 1, &shop, |shop, _, n| async move {
        change_price(&shop, n).await
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;

    let poison = json!({ "name": "Storm Cap #poison", "description": "A cap the index cannot take.", "price_cents": 2599 });
    lab.timeline.fault_begins("poison event in search.catalog");
    let added =
        shop.expect("adding the poison product", shop.post("/api/catalog/products", &poison).await).await?;
    let added_at = Instant::now();
    let id = added.body["id"].as_str().unwrap_or_default().to_owned();

    // Every change of the delivery's attempt count, until it is dead.
    let mut attempts: Vec<(u32, f64)> = Vec::new();
    let mut dead_at = None;
    while dead_at.is_none() && added_at.elapsed() < Duration::from_secs(60) {
        if let Some((count, state)) = shop.probe.delivery(CONSUMER, "catalog", &id).await? {
            if attempts.last().is_none_or(|(seen, _)| *seen != count) {
                attempts.push((count, added_at.elapsed().as_secs_f64()));
            }
            if state == "dead" {
                dead_at = Some(added_at.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let letters = shop.get(&format!("/api/search/admin/dead-letters?consumer={CONSUMER}")).await;
    let letters = letters.body.as_array().cloned().unwrap_or_default();
    let letter_attempts = letters.first().and_then(|l| l["attempts"].as_u64()).unwrap_or(0);
    let error = letters.first().and_then(|l| l["error"].as_str()).unwrap_or("").to_owned();
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;

    let fixed = shop.put(&format!("/api/catalog/products/{id}/name"), &json!({ "name": "Storm Cap" })).await;
    shop.expect("renaming the product", fixed).await?;
    // Replay once the fix is indexed, so the replayed old version is a harmless no-op.
    let fixed_at = Instant::now();
    while !indexed_as(&shop, "Storm Cap", 2).await && fixed_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replayed = shop.post("/api/search/admin/dead-letters/replay", &json!({ "consumer": CONSUMER })).await;
    let replayed =
        shop.expect("replaying the dead letter", replayed).await?.body["count"].as_u64().unwrap_or(0);
    lab.timeline.fault_ends();
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    load.stop().await;
    shop.converge(Duration::from_secs(60)).await?;
    let found = shop.get("/api/search/search?q=Storm").await;
    let indexed = found.body["results"].as_array().and_then(|r| r.first()).cloned().unwrap_or_default();
    let left = shop.get(&format!("/api/search/admin/dead-letters?consumer={CONSUMER}")).await;
    let left = left.body.as_array().map_or(0, Vec::len);
    let price_changes = lab.timeline.attempts("catalog writes", 0.0, lab.timeline.now());
    let lost = shop.lost().await?;
    shop.stop().await?;

    let times: Vec<String> = attempts.iter().map(|(n, t)| format!("#{n} at {:.0} ms", t * 1000.0)).collect();
    let gaps: Vec<f64> = attempts.windows(2).map(|w| (w[1].1 - w[0].1) * 1000.0).collect();
    let mut report = Report::default();
    report.line(format!("poison product                            {id} (\"Storm Cap #poison\")"));
    report.line(format!("attempts seen on the bus                  {}", times.join(", ")));
    report.line(format!(
        "gaps between attempts (ms)                {}",
        gaps.iter().map(|g| format!("{g:.0}")).collect::<Vec<_>>().join(", ")
    ));
    report.line(format!(
        "dead letter                               {} after {} attempts, at {:.0} ms: {error}",
        letters.len(),
        letter_attempts,
        dead_at.unwrap_or(0.0) * 1000.0
    ));
    report.line(format!(
        "other catalog events meanwhile            {} price changes, {} indexed and applied",
        price_changes.len(),
        if lost.lost == 0 { "all" } else { "not all" }
    ));
    report.line(format!("fixed (renamed), then replayed            {replayed}"));
    report.line(format!(
        "the index now holds                       {} v{}",
        indexed["title"].as_str().unwrap_or("nothing"),
        indexed["version"]
    ));
    report.line(format!("dead letters left                         {left}"));
    report.line(format!("events lost                               {}", lost.lost));
    report.figure("attempts", letter_attempts);
    report.figure("attempt_times_ms", attempts.iter().map(|(_, t)| (t * 1000.0).round()).collect::<Vec<_>>());
    report.figure("gaps_ms", gaps.iter().map(|g| g.round()).collect::<Vec<_>>());
    report.figure("dead_letters", letters.len());
    report.figure("replayed", replayed);
    report.figure("dead_letters_left", left);
    report.check(
        "the poison event was tried 3 times, then became one dead letter",
        letter_attempts == 3 && letters.len() == 1,
    );
    report.check("the dead letter was replayed after the fix", replayed == 1 && left == 0);
    report.check(
        "the index holds the fixed product",
        indexed["title"] == "Storm Cap" && indexed["version"] == 2,
    );
    report.losses(&lost);
    Ok(report)
}
