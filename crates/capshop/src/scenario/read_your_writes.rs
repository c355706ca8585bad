//! Scenario 5 (DESIGN §4): replication to the order service is slowed (latency on
//! `order->bus`). A shopper who changes the address and sends the write's consistency
//! token to the checkout sees the new address every time; without the token the
//! checkout answers from the replica, which may still hold the old one.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use shop::chaos::BUS;
use shop::service::Choices;

use super::Report;
use super::lab::{Lab, LabShop};
use super::timeline::ratio;

const CUSTOMERS: [&str; 2] = ["c-ada", "c-bob"];

/// Moves `customer` to a new address and shows the checkout at once, with or without the
/// write's token; answers whether the new address was shown, and where it came from.
async fn move_and_check_out(
    shop: &LabShop,
    customer: &str,
    n: usize,
    with_token: bool,
) -> anyhow::Result<(bool, String)> {
    let line1 = format!("{} Willow Lane", n + 1);
    let address = json!({ "line1": line1, "city": "Bath", "postcode": "BA1 1AA", "country": "GB" });
    let written = shop.put(&format!("/api/customer/customers/{customer}/address"), &address).await;
    let written = shop.expect("changing the address", written).await?;
    let token = written.token.unwrap_or_default();
    let headers: Vec<(&str, &str)> =
        if with_token { vec![("consistency-token", token.as_str())] } else { Vec::new() };
    let shown = shop.call(Method::GET, &format!("/api/order/checkout/{customer}"), None, &headers).await;
    let shown = shop.expect("showing the checkout", shown).await?;
    let source = shown.body["address_source"]["source"].as_str().unwrap_or("?").to_owned();
    Ok((shown.body["address"]["line1"] == line1.as_str(), source))
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let delay = lab.phase(0.4, 1.0);
    shop.shop.chaos.latency("order", BUS, delay)?;
    lab.timeline.fault_begins(&format!("order <- bus +{} ms", delay.as_millis()));
    let rounds = if lab.quick { 6 } else { 20 };
    let mut sources = std::collections::BTreeMap::<(bool, String), u32>::new();
    for n in 0..rounds {
        for with_token in [true, false] {
            let started = tokio::time::Instant::now();
            let (new, source) =
                move_and_check_out(&shop, CUSTOMERS[n % 2], 2 * n + usize::from(with_token), with_token)
                    .await?;
            let series = if with_token { "with token" } else { "without token" };
            lab.timeline.attempt(series, new, started.elapsed());
            *sources.entry((with_token, source)).or_default() += 1;
        }
    }
    shop.shop.chaos.heal_all();
    lab.timeline.fault_ends();
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;

    let now = lab.timeline.now();
    let with = ratio(&lab.timeline.attempts("with token", 0.0, now)).unwrap_or(0.0);
    let without = ratio(&lab.timeline.attempts("without token", 0.0, now)).unwrap_or(0.0);
    let from = |token: bool| {
        sources
            .iter()
            .filter(|((t, _), _)| *t == token)
            .map(|((_, s), n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut report = Report::default();
    report.line(format!("replication to order delayed by           {} ms per pass", delay.as_millis()));
    report.line(format!(
        "{:<42} {:>12} {:>14}",
        "address changes followed by a checkout", "with token", "without token"
    ));
    report.line(format!("{:<42} {:>12} {:>14}", "checkouts", rounds, rounds));
    report.line(format!("{:<42} {:>12.3} {:>14.3}", "new address shown (ratio)", with, without));
    report.line(format!("{:<42} {:>12} {:>14}", "answered from", from(true), from(false)));
    report.line(format!("events lost                                {}", lost.lost));
    report.figure("delay_ms", delay.as_millis() as u64);
    report.figure("with_token_new_address_ratio", with);
    report.figure("without_token_new_address_ratio", without);
    report.check("with the token, every checkout showed the new address", with == 1.0);
    report.losses(&lost);
    Ok(report)
}
