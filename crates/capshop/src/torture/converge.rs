//! The end of a schedule: after the heal, replay every dead letter and wait (bounded) until
//! nothing is in an outbox, every consumer has applied its streams' heads, reconcile finds
//! nothing in flight and the sites have decided every reservation; then read the final
//! state every rule is judged on.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::json;
use shop::contracts::facts::{ServiceFacts, ShopFacts};
use shop::contracts::inventory::ReservationStatus;
use shop::contracts::order::OrderStatus;
use shop::reconcile::Report;
use tokio::time::Instant;

use super::child::ChildShop;

/// Every part, as the gateway routes to it.
pub const PARTS: [&str; 8] =
    ["order", "customer", "catalog", "inventory-dc1", "inventory-dc2", "payment", "shipping", "search"];

/// Lag, backlog and dead letters summed over every part, from their metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backlog {
    pub lag: u64,
    pub backlog: u64,
    pub dead: u64,
}

/// Reads every part's metrics; `None` when one does not answer.
pub async fn backlog(shop: &ChildShop) -> Option<Backlog> {
    let mut sum = Backlog::default();
    for part in PARTS {
        let answer = shop.admin(Method::GET, &format!("/api/{part}/metrics"), None).await;
        if answer.status != 200 {
            return None;
        }
        let text = answer.body.as_str().map(str::to_owned)?;
        sum.lag += metric(&text, "capshop_consumer_lag_events");
        sum.backlog += metric(&text, "capshop_outbox_backlog_events");
        sum.dead += metric(&text, "capshop_dead_letters");
    }
    Some(sum)
}

/// The sum of every sample of `name` in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

/// Every part's facts through the gateway, and reconcile over them.
pub async fn final_state(shop: &ChildShop) -> anyhow::Result<(ShopFacts, Report)> {
    let mut facts = ShopFacts { live: true, ..ShopFacts::default() };
    for part in PARTS {
        let body = shop
            .expect_admin(&format!("{part}'s facts"), Method::GET, &format!("/api/{part}/admin/facts"), None)
            .await?;
        facts.merge(serde_json::from_value(body).with_context(|| format!("{part}'s facts are unreadable"))?);
    }
    let report = shop::reconcile::check(&facts);
    Ok((facts, report))
}

/// Replays every dead letter of every part (each site keeps its own: through the gateway,
/// `inventory` is only dc1).
pub async fn replay_dead_letters(shop: &ChildShop) {
    for part in PARTS {
        let path = format!("/api/{part}/admin/dead-letters/replay");
        shop.admin(Method::POST, &path, Some(&json!({ "all": true }))).await;
    }
}

/// Orders still waiting for inventory's answer and reservation lines the sites have not
/// concluded: the agreement between the sites runs in rounds, not by events, so lag and
/// backlog alone do not show it is done.
fn undecided(facts: &ShopFacts) -> usize {
    facts
        .parts
        .iter()
        .map(|part| match &part.state {
            ServiceFacts::Order { orders, .. } => {
                orders.iter().filter(|o| o.status == OrderStatus::PendingStock).count()
            }
            ServiceFacts::Inventory { lines, .. } => lines
                .iter()
                .filter(|l| matches!(l.status, ReservationStatus::Pending | ReservationStatus::Provisional))
                .count(),
            _ => 0,
        })
        .sum()
}

/// Waits until the shop has settled, replaying dead letters on the way; `Err(why)` (a
/// liveness failure) when it has not within `within`.
pub async fn settle(shop: &ChildShop, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        replay_dead_letters(shop).await;
        match (backlog(shop).await, final_state(shop).await) {
            (Some(b), Ok((facts, report)))
                if b.lag == 0
                    && b.backlog == 0
                    && b.dead == 0
                    && report.in_flight == 0
                    && undecided(&facts) == 0 =>
            {
                return Ok(started.elapsed());
            }
            (b, state) if started.elapsed() > within => {
                let findings = state
                    .map(|(facts, r)| format!("{} in flight, {} undecided", r.in_flight, undecided(&facts)))
                    .unwrap_or_else(|e| format!("{e:#}"));
                return Err(format!(
                    "liveness failure: not settled within {within:?}: {b:?}, reconcile: {findings}"
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
