//! Scenario "db failover" (seed 003, scenario A) on real PostgreSQL: the order service's
//! database on a primary with a streaming standby, reached through a multi-host URL with
//! `target_session_attrs=read-write`; every other service stays on SQLite, so what they
//! hold of a lost order (its payment authorization, its reservation, its replicas) is
//! what `capshop reconcile` must find. Under checkout load the standby falls behind
//! (the primary's WAL sender is frozen with SIGSTOP, as a stalled network leaves a
//! replica), the primary is SIGKILLed, and capshop's failover step ([`failover`])
//! promotes the standby. Run once with asynchronous replication and once with the
//! standby synchronous.
//!
//! It reports the acknowledged orders that the promoted database no longer has (read
//! back through the API, listed by key), what `capshop reconcile` then finds in the other
//! services (an authorization, a reservation or a shipment whose order is gone), the
//! time from the kill to the next successful checkout, the checkouts that failed
//! meanwhile, and the p99 latency of placing an order with each choice.

mod checkouts;
mod failover;
mod pair;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use shop::reconcile::Class;
use shop::stores::StoreLocation;
use tokio::time::Instant;

use super::Report;
use super::lab::{Lab, LabShop, Load, until};
use super::measure::Lost;
use super::timeline::percentile;
use checkouts::{Checkouts, ReadBack, WORKERS, read_back};
use failover::{Failover, fail_over};
use pair::{Pair, Replication};

/// The part whose database is on the replicated pair.
const REPLICATED: &str = "order";

/// What one choice did.
struct Outcome {
    replication: Replication,
    acknowledged: usize,
    read_back: ReadBack,
    /// Orders acknowledged (201), by id.
    acknowledged_ids: Vec<String>,
    /// Orders placed after the failover.
    after: Vec<String>,
    /// Orders placed after the failover that still wait for inventory's answer.
    stuck_after: Vec<String>,
    /// Defects `capshop reconcile` found, as `kind key=value ...`.
    findings: Vec<String>,
    /// Orders named by a reconcile defect: effects in other services whose order is gone,
    /// or whose order lost a later change (still pending while inventory reserved it).
    orphaned_orders: BTreeSet<String>,
    recovery: Duration,
    failover: Failover,
    checkout_errors: usize,
    write_p50_ms: f64,
    write_p99_ms: f64,
    /// `None` when the shop converged; else why not.
    not_converged: Option<String>,
    lost: Lost,
}

async fn run_choice(lab: &Lab, replication: Replication) -> anyhow::Result<Outcome> {
    let series = replication.as_str();
    let mut pair = Pair::start(replication).await?;
    let base_url = pair.base_url();
    let parts = vec![REPLICATED.to_owned()];
    let stores = StoreLocation::Split { base_url, parts: parts.clone() };
    let shop = lab.shop_with(series, |config| config.stores = stores).await?;
    let checkouts = Checkouts::default();
    let load = Load::start(&lab.timeline, series, WORKERS, &shop, {
        let checkouts = checkouts.clone();
        move |shop, worker, n| {
            let checkouts = checkouts.clone();
            async move { checkouts.attempt(&shop, worker, n).await }
        }
    });
    tokio::time::sleep(lab.phase(1.0, 3.0)).await;

    let stalled = Instant::now();
    lab.timeline.fault_begins(&format!("{series}: standby stalled, primary killed, standby promoted"));
    pair.stall_replication()?;
    tokio::time::sleep(lab.phase(0.5, 1.0)).await;
    pair.kill_primary();
    let killed = Instant::now();
    let bus = shop.shop.parts.values().next().map(|ctx| ctx.bus.clone()).context("a shop without parts")?;
    let failover = fail_over(&pair, &parts, bus.as_ref()).await?;
    let recovered = until("a successful checkout after the failover", Duration::from_secs(60), || {
        let found = checkouts.first_success_since(killed);
        async move { Ok(found) }
    })
    .await?;
    tokio::time::sleep(lab.phase(1.0, 3.0)).await;
    load.stop().await;
    lab.timeline.fault_ends();

    let not_converged = shop.converge(lab.phase(10.0, 30.0)).await.err().map(|e| e.to_string());
    let all = checkouts.all();
    let acknowledged: Vec<String> = all.iter().filter_map(|c| c.order.clone()).collect();
    let after: Vec<String> =
        all.iter().filter(|c| c.started >= killed + failover.opened).filter_map(|c| c.order.clone()).collect();
    let read_back = read_back(&shop, &acknowledged).await?;
    let stuck_after = read_back.pending.iter().filter(|id| after.contains(id)).cloned().collect();
    // An authorization whose order is gone reads as in flight while its placement could
    // still be committing (PLACING_MS): reconcile again until that window has passed.
    let report = settled_report(&shop).await?;
    let defects: Vec<_> = report.findings.iter().filter(|f| f.class == Class::Defect).collect();
    let findings = defects
        .iter()
        .map(|f| {
            let keys: Vec<String> = f.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} {}", f.kind, keys.join(" "))
        })
        .collect();
    // An effect without its cause names its order: an orphan by `order`, a dead letter
    // (an answer its order's service cannot apply) by its event's `key`.
    let orphaned_orders = defects
        .iter()
        .filter_map(|f| f.keys.get("order").or(f.keys.get("key")))
        .filter(|key| key.starts_with("o-"))
        .cloned()
        .collect();
    let lost = shop.lost().await?;
    shop.stop().await?;
    drop(pair);

    let errors = all.iter().filter(|c| !c.ok && c.started >= stalled && c.started <= recovered).count();
    let placing: Vec<Duration> = all.iter().filter(|c| c.ok && c.ended < stalled).map(|c| c.placing).collect();
    Ok(Outcome {
        replication,
        acknowledged: acknowledged.len(),
        acknowledged_ids: acknowledged,
        read_back,
        stuck_after,
        after,
        findings,
        orphaned_orders,
        recovery: recovered - killed,
        failover,
        checkout_errors: errors,
        write_p50_ms: percentile(placing.clone(), 0.5),
        write_p99_ms: percentile(placing, 0.99),
        not_converged,
        lost,
    })
}

pub async fn run(lab: &Lab) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut outcomes = Vec::new();
    for replication in [Replication::Async, Replication::Sync] {
        let outcome = run_choice(lab, replication).await?;
        describe(&mut report, &outcome);
        outcomes.push(outcome);
    }
    let (a, s) = (&outcomes[0], &outcomes[1]);
    report.figure("async_lost_writes", a.read_back.lost.len());
    report.figure("sync_lost_writes", s.read_back.lost.len());
    report.figure("async_lost_orders", a.read_back.lost.clone());
    report.figure("async_reconcile_findings", a.findings.clone());
    report.figure("async_reconcile_orders", a.orphaned_orders.len());
    report.figure("recovery_s", a.recovery.max(s.recovery).as_secs_f64());
    report.figure("checkout_errors", a.checkout_errors + s.checkout_errors);
    report.figure("write_p99_ms_async", a.write_p99_ms);
    report.figure("write_p99_ms_sync", s.write_p99_ms);

    report.check("sync: no acknowledged order is lost", s.read_back.lost.is_empty());
    report.check("sync: no committed event is lost, every acknowledged write is at every replica", s.lost.lost == 0);
    report.check("sync: the shop converged after the failover", s.not_converged.is_none());
    report.check(
        "sync: no reconcile defect names an acknowledged order",
        s.orphaned_orders.iter().all(|id| !s.acknowledged_ids.contains(id)),
    );
    report.check(
        "async: capshop reconcile names every lost order (an authorization, reservation or replica of it is left elsewhere)",
        a.read_back.lost.iter().all(|id| a.orphaned_orders.contains(id)),
    );
    for o in &outcomes {
        let name = o.replication.as_str();
        report.check(format!("{name}: checkouts succeed again after the failover"), o.recovery > Duration::ZERO);
        report.check(
            format!("{name}: every order placed after the failover got inventory's answer (no new event skipped)"),
            o.stuck_after.is_empty(),
        );
        report.check(
            format!("{name}: no reconcile defect names an order placed after the failover (each is the failover's)"),
            o.orphaned_orders.iter().all(|id| !o.after.contains(id)),
        );
    }
    Ok(report)
}

/// The lines and the per-choice figures of one choice.
fn describe(report: &mut Report, o: &Outcome) {
    let name = o.replication.as_str();
    let f = &o.failover;
    report.line(format!("{name} replication:"));
    report.line(format!(
        "  placing an order before the fault: p50 {:.1} ms, p99 {:.1} ms",
        o.write_p50_ms, o.write_p99_ms
    ));
    report.line(format!(
        "  failover step: primary silent after {:.2} s, standby promoted at {:.2} s, open at {:.2} s \
         ({} outbox heads raised to the bus's)",
        f.detected.as_secs_f64(),
        f.promoted.as_secs_f64(),
        f.opened.as_secs_f64(),
        f.heads_raised
    ));
    report.line(format!("  recovery: kill to the next successful checkout  {:.2} s", o.recovery.as_secs_f64()));
    report.line(format!("  checkouts failed from the stall to the recovery {}", o.checkout_errors));
    report.line(format!(
        "  acknowledged orders {}, read back {}, lost {}",
        o.acknowledged,
        o.read_back.present.len(),
        o.read_back.lost.len()
    ));
    for id in &o.read_back.lost {
        report.line(format!("    lost: order {id} (acknowledged 201, not on the promoted primary)"));
    }
    report.line(format!("  capshop reconcile: {} defects", o.findings.len()));
    for finding in &o.findings {
        report.line(format!("    {finding}"));
    }
    report.line(format!(
        "  loss check (the bus against the effects, acknowledged writes at the replicas): {} events, {} writes missing",
        o.lost.events, o.lost.writes
    ));
    if let Some(why) = &o.not_converged {
        report.line(format!("  not converged: {why}"));
    }
    report.figure(&format!("{name}_acknowledged_orders"), o.acknowledged);
    report.figure(&format!("recovery_s_{name}"), o.recovery.as_secs_f64());
    report.figure(&format!("write_p50_ms_{name}"), o.write_p50_ms);
    report.figure(&format!("checkout_errors_{name}"), o.checkout_errors);
    report.figure(&format!("{name}_reconcile_defects"), o.findings.len());
    report.figure(&format!("{name}_lost_events"), o.lost.events);
    report.figure(&format!("failover_open_s_{name}"), f.opened.as_secs_f64());
}

/// The reconcile report once no in-flight finding names an order any more (or the
/// placement window of `PLACING_MS` has passed for every one of them).
async fn settled_report(shop: &LabShop) -> anyhow::Result<shop::reconcile::Report> {
    let within = Duration::from_millis(shop::reconcile::PLACING_MS) + Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    loop {
        let reconciled = shop.expect("reconciling", shop.get("/admin/reconcile").await).await?;
        let report: shop::reconcile::Report = serde_json::from_value(reconciled.body)?;
        let waiting = report.findings.iter().any(|f| f.class == Class::InFlight && f.keys.contains_key("order"));
        if !waiting || started.elapsed() > within {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
