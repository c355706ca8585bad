//! Scenario 6 (DESIGN §4, seed 000): the links between the inventory sites dc1 and dc2
//! are cut (both ways) while customers routed to each site buy the last units of one
//! product, then healed. Run once per mode, each on a fresh shop: in `ap` both sites sell
//! during the partition, the oversell is found after the heal and the latest orders are
//! compensated before anything ships; in `cp` the cut-off sites refuse with the reason
//! and never oversell. The figures come from [`Audit`], read from the sites' databases.
//!
//! Figures per mode carry the mode as a suffix (`accepted_dc1_ap`, `divergence_after_heal_cp`);
//! `cp_oversold`, `ap_oversold_unshipped_after_compensation` and `events_lost` (both runs)
//! stand alone.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use shop::inventory::audit::{Audit, SiteFigures};
use shop::inventory::sites::{Mode, Site};
use shop::service::{Part, ServiceName};
use tokio::time::Instant;

use super::Report;
use super::measure::Lost;
use super::lab::{Lab, LabShop, until};

/// The product the sites fight over, and how many units it has.
const PRODUCT: &str = "p-010";
const UNITS: u64 = 3;
/// Orders of one unit placed at each site during the partition.
const PER_SITE: usize = 3;
const PATIENCE: Duration = Duration::from_secs(60);

/// What one mode did.
struct Outcome {
    /// During the partition, once every order was answered or held.
    during: Audit,
    /// After the heal, once every order was answered and the sites converged.
    after: Audit,
    /// A refusal's reason, as the order service reports it.
    refusal: Option<String>,
    /// Orders confirmed after the heal (each waited for until it shipped).
    confirmed: u64,
    convergence_s: f64,
    lost: Lost,
}

/// A seeded customer whose orders go to `site`.
fn customer_of(site: Site) -> anyhow::Result<&'static str> {
    ["c-ada", "c-bob", "c-cyd"]
        .into_iter()
        .find(|c| Site::of_customer(c) == site)
        .with_context(|| format!("no seeded customer is routed to {site}"))
}

async fn audit(shop: &LabShop) -> anyhow::Result<Audit> {
    let sites = shop.shop.sites.iter().map(|(site, s)| (*site, s.ctx.store.clone())).collect();
    let shipping = &shop.shop.contexts[&ServiceName::Shipping].store;
    Ok(Audit::measure(&sites, shipping).await?)
}

/// Sets the stock of `PRODUCT` to `UNITS` and waits until both sites see it.
async fn stock(shop: &LabShop) -> anyhow::Result<()> {
    let path = format!("/api/inventory/stock/{PRODUCT}");
    shop.expect("setting the stock", shop.put(&path, &json!({ "on_hand": UNITS })).await).await?;
    for (site, running) in &shop.shop.sites {
        let url = format!("http://{}/stock/{PRODUCT}", running.addr);
        until(&format!("{site} to see the stock"), PATIENCE, || async {
            let seen: Value = reqwest::get(&url).await?.json().await?;
            Ok((seen["on_hand"] == UNITS).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// Places `PER_SITE` orders at each site, alternating. Each is an attempt of `series`
/// that succeeds when its site takes it: confirms it, or (ap) reserves it provisionally.
async fn buy(lab: &Lab, shop: &LabShop, series: &str) -> anyhow::Result<Vec<String>> {
    let mut orders = Vec::new();
    for _ in 0..PER_SITE {
        for site in Site::ALL {
            let started = Instant::now();
            let (_, placed) = shop.checkout(customer_of(site)?, PRODUCT, json!({})).await;
            let placed = shop.expect("placing an order", placed).await?;
            let order = placed.body["id"].as_str().context("an order has an id")?.to_owned();
            let taken = taken(shop, site, &order).await?;
            lab.timeline.attempt(series, taken, started.elapsed());
            orders.push(order);
        }
    }
    Ok(orders)
}

/// Waits until `site` has answered `order`: whether it took it (confirmed, or held
/// provisionally while the order waits in pending stock) rather than refused it.
async fn taken(shop: &LabShop, site: Site, order: &str) -> anyhow::Result<bool> {
    let lines = format!("http://{}/reservations?order_id={order}", shop.shop.sites[&site].addr);
    until(&format!("{site} to answer order {order}"), PATIENCE, || async {
        let found = shop.get(&format!("/api/order/orders/{order}")).await.body;
        if found["status"].is_string() && found["status"] != "pending_stock" {
            return Ok(Some(found["status"] == "confirmed"));
        }
        let held: Value = reqwest::get(&lines).await?.json().await.unwrap_or(Value::Null);
        let provisional = held.as_array().into_iter().flatten().any(|l| l["status"] == "provisional");
        Ok(provisional.then_some(true))
    })
    .await
}

/// Waits until `order` has left pending stock; answers it.
async fn answered(shop: &LabShop, order: &str) -> anyhow::Result<Value> {
    until(&format!("order {order} to be answered"), PATIENCE, || async {
        let found = shop.get(&format!("/api/order/orders/{order}")).await.body;
        Ok((found["status"].is_string() && found["status"] != "pending_stock").then_some(found))
    })
    .await
}

/// How one row of the report shows a mode's outcome.
type Shown = fn(&Outcome) -> String;

/// A figure of each site during the partition, as `dc1 / dc2`.
fn per_site(o: &Outcome, f: fn(&SiteFigures) -> u64) -> String {
    format!("{} / {}", f(&o.during.sites[&Site::Dc1]), f(&o.during.sites[&Site::Dc2]))
}

async fn run_mode(lab: &Lab, mode: Mode) -> anyhow::Result<Outcome> {
    let series = mode.as_str();
    let shop = lab.shop_with(series, |config| config.choices.inventory = mode).await?;
    stock(&shop).await?;
    shop.converge(PATIENCE).await?;

    let [dc1, dc2] = Site::ALL.map(|s| Part::Site(s).name());
    shop.shop.chaos.cut(&dc1, &dc2, false)?;
    lab.timeline.fault_begins(&format!("{series}: dc1 and dc2 partitioned"));
    let orders = buy(lab, &shop, series).await?;
    let during = until("every order to be held or refused at its site", PATIENCE, || async {
        let a = audit(&shop).await?;
        let answered = |f: &SiteFigures| f.accepted + f.refused_unreachable + f.refused_short;
        Ok(a.sites.values().all(|f| answered(f) >= PER_SITE as u64).then_some(a))
    })
    .await?;
    // The partition outlasts the orders a little, so the plot shows the sites apart.
    tokio::time::sleep(lab.phase(0.5, 3.0)).await;
    shop.shop.chaos.heal(&dc1, &dc2)?;
    lab.timeline.fault_ends();
    let healed = Instant::now();

    let mut outcomes = BTreeMap::new();
    for order in &orders {
        outcomes.insert(order.clone(), answered(&shop, order).await?);
    }
    until("the sites to agree and conclude every reservation", PATIENCE, || async {
        let a = audit(&shop).await?;
        Ok((a.divergence == 0 && a.sites.values().all(|f| f.waiting == 0)).then_some(a))
    })
    .await?;
    let confirmed: Vec<&String> =
        outcomes.iter().filter(|(_, o)| o["status"] == "confirmed").map(|(id, _)| id).collect();
    for order in &confirmed {
        until(&format!("confirmed order {order} to ship"), PATIENCE, || async {
            let shipments = shop.get(&format!("/api/shipping/shipments?order_id={order}")).await.body;
            Ok((shipments[0]["status"] == "shipped").then_some(()))
        })
        .await?;
    }
    shop.converge(PATIENCE).await?;
    let convergence_s = healed.elapsed().as_secs_f64();
    // Measured once the confirmed orders shipped, so a compensated one that shipped shows.
    let after = audit(&shop).await?;
    let lost = shop.lost().await?;
    shop.stop().await?;
    let refusal = outcomes
        .values()
        .find(|o| o["status"] == "rejected")
        .and_then(|o| o["reason"].as_str())
        .map(str::to_owned);
    Ok(Outcome {
        during,
        after,
        refusal,
        confirmed: confirmed.len() as u64,
        convergence_s,
        lost,
    })
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let ap = run_mode(lab, Mode::Ap).await?;
    let cp = run_mode(lab, Mode::Cp).await?;
    let mut report = Report::default();
    report.line(format!(
        "{UNITS} units of {PRODUCT}; during the partition {PER_SITE} orders of one unit at each site"
    ));
    let rows: [(&str, Shown); 12] = [
        ("accepted during the partition, dc1 / dc2", |o| per_site(o, |f| f.accepted)),
        ("refused, other site unreachable, dc1 / dc2", |o| per_site(o, |f| f.refused_unreachable)),
        ("refused, short in the view, dc1 / dc2", |o| per_site(o, |f| f.refused_short)),
        ("oversold units (before compensation)", |o| o.after.oversold_units.to_string()),
        ("compensated orders", |o| o.after.compensated_orders.to_string()),
        ("oversold, unshipped, uncompensated after the heal", |o| {
            o.after.oversold_unshipped_uncompensated.to_string()
        }),
        ("oversold and shipped", |o| o.after.oversold_shipped.to_string()),
        ("confirmed after the heal (each then shipped)", |o| o.confirmed.to_string()),
        ("divergence during the partition (rows)", |o| o.during.divergence.to_string()),
        ("divergence after the heal (rows)", |o| o.after.divergence.to_string()),
        ("convergence after the heal (s)", |o| format!("{:.3}", o.convergence_s)),
        ("events lost", |o| o.lost.lost.to_string()),
    ];
    report.line(format!("{:<52} {:>10} {:>10}", "", "ap", "cp"));
    for (what, shown) in rows {
        report.line(format!("{what:<52} {:>10} {:>10}", shown(&ap), shown(&cp)));
    }
    if let Some(reason) = &cp.refusal {
        report.line(format!("cp refused with: {reason}"));
    }

    for (mode, o) in [("ap", &ap), ("cp", &cp)] {
        for site in Site::ALL {
            let f = &o.during.sites[&site];
            report.figure(&format!("accepted_{site}_{mode}"), f.accepted);
            report.figure(&format!("refused_unreachable_{site}_{mode}"), f.refused_unreachable);
            report.figure(&format!("refused_short_{site}_{mode}"), f.refused_short);
        }
        report.figure(&format!("oversold_units_{mode}"), o.after.oversold_units);
        report.figure(&format!("compensated_orders_{mode}"), o.after.compensated_orders);
        report.figure(&format!("oversold_shipped_{mode}"), o.after.oversold_shipped);
        report.figure(&format!("confirmed_{mode}"), o.confirmed);
        report.figure(&format!("divergence_during_{mode}"), o.during.divergence);
        report.figure(&format!("divergence_after_heal_{mode}"), o.after.divergence);
        report.figure(&format!("convergence_s_{mode}"), o.convergence_s);
    }
    report.figure("cp_oversold", cp.after.oversold_units + cp.after.reserved_beyond_stock);
    report.figure("ap_oversold_unshipped_after_compensation", ap.after.oversold_unshipped_uncompensated);
    report.figure("cp_refusal_reason", cp.refusal.clone().unwrap_or_default());

    let cp_in_view: u64 =
        cp.during.sites.values().chain(cp.after.sites.values()).map(|f| f.oversold_in_view).sum();
    report.check(
        "cp never oversells (nothing accepted or finally reserved beyond the stock, nor in a site's view)",
        cp.after.oversold_units + cp.after.reserved_beyond_stock + cp_in_view == 0,
    );
    report.check(
        "cp: each cut-off site refused every order routed to it, saying it cannot reach the other",
        cp.during.sites.values().all(|f| f.refused_unreachable == PER_SITE as u64 && f.accepted == 0)
            && cp.refusal.as_deref().is_some_and(|r| r.contains("cannot reach")),
    );
    report.check(
        "ap: both sites accepted orders during the partition",
        ap.during.sites.values().all(|f| f.accepted == PER_SITE as u64),
    );
    report.check(
        "ap: the oversell was found and every oversold order compensated",
        ap.after.oversold_units > 0
            && ap.after.compensated_orders == ap.after.oversold_units
            && ap.after.oversold_uncompensated == 0
            && ap.after.reserved_beyond_stock == 0,
    );
    let nothing_oversold_shipped =
        ap.after.oversold_shipped == 0 && ap.after.oversold_unshipped_uncompensated == 0;
    report.check("ap: nothing oversold shipped", nothing_oversold_shipped);
    report.check("ap: exactly the stock was confirmed and shipped", ap.confirmed == UNITS);
    let agree = ap.after.divergence == 0 && cp.after.divergence == 0;
    report.check("the sites agree after the heal (divergence 0, both modes)", agree);
    report.losses(&ap.lost.clone().merge(cp.lost.clone()));
    Ok(report)
}
