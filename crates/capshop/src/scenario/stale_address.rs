//! Scenario 3 (DESIGN §4): an address change does not propagate (the customer service
//! cannot publish). The checkout shows the old address with its age, the shopper
//! overrides it, and shipping holds the shipment until the addresses agree, then ships.

use std::time::Duration;

use serde_json::{Value, json};
use shop::chaos::BUS;
use shop::service::Choices;
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop};

const CUSTOMER: &str = "c-ada";

/// The shipment of `order_id` once it is `wanted`, polled for at most `within`.
async fn shipment(shop: &LabShop, order_id: &str, wanted: &str, within: Duration) -> Option<Value> {
    let started = Instant::now();
    while started.elapsed() < within {
        let answer = shop.get(&format!("/api/shipping/shipments?order_id={order_id}")).await;
        if let Some(found) = answer.body.as_array().and_then(|s| s.first()).filter(|s| s["status"] == wanted)
        {
            return Some(found.clone());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let shop = lab.shop("shop", Choices::default()).await?;
    let old = shop.get(&format!("/api/customer/customers/{CUSTOMER}")).await.body["address"].clone();
    let moved =
        json!({ "line1": "10 Princes Street", "city": "Edinburgh", "postcode": "EH2 2AN", "country": "GB" });

    shop.shop.chaos.cut("customer", BUS, true)?;
    lab.timeline.fault_begins("customer -> bus cut");
    shop.expect(
        "changing the address",
        shop.put(&format!("/api/customer/customers/{CUSTOMER}/address"), &moved).await,
    )
    .await?;
    tokio::time::sleep(lab.phase(0.5, 2.0)).await;
    let shown = shop.get(&format!("/api/order/checkout/{CUSTOMER}")).await;
    let shown_address = &shown.body["address"];
    let shows_old = shown_address == &old && shown_address != &moved;
    let age_ms = shown.body["address_source"]["age_ms"].as_u64().unwrap_or(0);
    let source = shown.body["address_source"]["source"].as_str().unwrap_or("?").to_owned();

    let (_, placed) = shop.checkout(CUSTOMER, "p-005", json!({ "address_override": moved })).await;
    let placed = shop.expect("placing the order with the override", placed).await?;
    let order_id = placed.body["id"].as_str().unwrap_or_default().to_owned();
    let override_used = placed.body["address_source"] == "override";
    let held = shipment(&shop, &order_id, "held", Duration::from_secs(30)).await;
    let reason = held.as_ref().and_then(|h| h["reason"].as_str()).unwrap_or("").to_owned();

    shop.shop.chaos.heal_all();
    lab.timeline.fault_ends();
    let healed = Instant::now();
    let shipped = shipment(&shop, &order_id, "shipped", Duration::from_secs(60)).await;
    let released_s = healed.elapsed().as_secs_f64();
    let shipped_to = shipped.as_ref().map(|s| s["address"].clone()).unwrap_or(Value::Null);
    shop.converge(Duration::from_secs(60)).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;

    let city =
        |a: &Value| format!("{}, {}", a["line1"].as_str().unwrap_or("?"), a["city"].as_str().unwrap_or("?"));
    let mut report = Report::default();
    report.line(format!("address before the change                 {}", city(&old)));
    report.line(format!("address after the change (not propagated) {}", city(&moved)));
    report.line(format!(
        "checkout showed                           {} (from the {source}, {age_ms} ms old)",
        city(shown_address)
    ));
    report.line(format!(
        "order {order_id} placed with the override   {}",
        if override_used { "yes" } else { "no" }
    ));
    report.line(format!(
        "shipment held                             {}",
        if held.is_some() { reason.as_str() } else { "no" }
    ));
    report.line(format!(
        "shipped after the link healed             {}",
        if shipped.is_some() {
            format!("to {} after {released_s:.3} s", city(&shipped_to))
        } else {
            "no".into()
        }
    ));
    report.line(format!("events lost                               {}", lost.lost));
    report.figure("checkout_shows_old_address", shows_old);
    report.figure("address_age_ms", age_ms);
    report.figure("override_used", override_used);
    report.figure("shipment_held", held.is_some());
    report.figure("held_reason", reason.clone());
    report.figure("released_after_s", released_s);
    report.check(
        "the checkout showed the old address from the replica, with its age",
        shows_old && source == "replica",
    );
    report.check("the order was placed with the overriding address", override_used);
    report.check(
        "the shipment was held because the addresses disagreed",
        held.is_some() && reason.contains("address"),
    );
    report.check("the shipment was released to the new address once they agreed", shipped_to == moved);
    report.losses(&lost);
    Ok(report)
}
