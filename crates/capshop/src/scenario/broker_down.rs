//! Scenario 2 (DESIGN §4): every service, each inventory site included, loses the bus at
//! once. Writes go on — each commits its events to its own outbox, which grows — and after
//! the bus returns every replica converges, with no event lost. With `--drop-event` one
//! OrderPlaced event is deleted from the order service's outbox during the outage, and the
//! report shows it lost and fails.

use std::time::Duration;

use serde_json::json;
use shop::chaos::BUS;
use shop::service::{Choices, Part, ServiceName};

use super::Report;
use super::lab::{Lab, LabShop, Load};
use super::timeline::ratio;

/// Worker 0 and 1 check out; worker 2 moves house back and forth: every write path.
async fn write(shop: &LabShop, worker: usize, n: u64) -> bool {
    match worker {
        0 | 1 => {
            let customer = ["c-ada", "c-bob"][worker];
            let (_, placed) = shop.checkout(customer, &format!("p-{:03}", 1 + n % 20), json!({})).await;
            placed.status == 201
        }
        _ => {
            let address = json!({ "line1": format!("{} Harbour Road", n + 1), "city": "Portsmouth", "postcode": "PO1 3AX", "country": "GB" });
            shop.put("/api/customer/customers/c-cyd/address", &address).await.ok()
        }
    }
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let load = Load::start(&lab.timeline, "writes", 3, &shop, |shop, worker, n| async move {
        write(&shop, worker, n).await
    });
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    // Every part of the running shop, each inventory site included.
    for part in shop.shop.parts.keys() {
        shop.shop.chaos.cut(&part.name(), BUS, false)?;
    }
    let from = lab.timeline.fault_begins("bus unreachable");
    tokio::time::sleep(lab.phase(2.0, 8.0)).await;
    let to = lab.timeline.now();
    let during = lab.timeline.attempts("writes", from, to);
    let backlog_at_heal = shop.probe.backlog().await?;
    let dropped = if lab.drop_event {
        Some(shop.drop_committed_event(Part::Service(ServiceName::Order), shop::contracts::order::ORDER_PLACED).await?)
    } else {
        None
    };
    load.stop().await;
    shop.shop.chaos.heal_all();
    lab.timeline.fault_ends();
    let convergence = shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    let max_backlog = lab.timeline.max_backlog(from, lab.timeline.now()).max(backlog_at_heal);
    shop.stop().await?;

    let accepted = during.iter().filter(|a| a.ok).count();
    let mut report = Report::default();
    report.line(format!("writes attempted during the outage        {}", during.len()));
    report.line(format!(
        "writes accepted during the outage         {accepted} ({})",
        ratio(&during).map_or("none".into(), |r| format!("{:.1}%", r * 100.0))
    ));
    report.line(format!("maximum outbox backlog (events)           {max_backlog}"));
    report.line(format!("convergence after the bus returned (s)    {:.3}", convergence.as_secs_f64()));
    report.line(format!(
        "events lost                               {} (of {} committed, {} deliveries checked)",
        lost.lost, lost.committed, lost.deliveries
    ));
    report.figure("writes_attempted", during.len());
    report.figure("writes_accepted", accepted);
    report.figure("success_ratio", ratio(&during).unwrap_or(0.0));
    report.figure("max_outbox_backlog", max_backlog);
    report.figure("convergence_s", convergence.as_secs_f64());
    report.figure("events_committed", lost.committed);
    if let Some((event, key)) = dropped {
        report.line(format!("dropped on purpose (--drop-event)         {event} ({key})"));
        report.figure("dropped_event", event);
        report.figure("dropped_key", key);
    }
    report.check(
        "every service kept accepting writes without the bus",
        ratio(&during).is_some_and(|r| r >= 0.99),
    );
    report.check("the outboxes grew while the bus was away", max_backlog > 0);
    report.losses(&lost);
    Ok(report)
}
