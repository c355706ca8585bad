//! Every scenario of DESIGN §4, run as the real binary (`capshop scenario NAME --quick
//! --json --out DIR`): its invariant holds, its figures are reported and its plot is
//! written. The scenarios run one at a time so they do not compete for the machine.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn capshop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
}

/// Runs `capshop scenario name --quick --json` with `extra` arguments; answers how it
/// exited and its JSON report.
fn run_scenario(name: &str, out: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let output = capshop()
        .args(["scenario", name, "--quick", "--json"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .expect("capshop runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{name} printed no JSON report ({e}): {stdout}\n{stderr}"));
    assert_eq!(report["scenario"], name);
    (output, report)
}

/// Runs scenario `name` quickly and answers its JSON report.
fn scenario(name: &str, out: &Path) -> Value {
    let report = passing(name, out);
    assert!(figure(&report, "deliveries_checked") > 0.0, "the loss check read effects: {report:#}");
    report
}

/// Runs scenario `name` quickly, checks that it passed and drew its plot, and answers
/// its JSON report.
fn passing(name: &str, out: &Path) -> Value {
    let (output, report) = run_scenario(name, out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(report["passed"], true, "{name} failed its invariant: {report:#}\n{stderr}");
    assert!(output.status.success(), "a passing scenario exits 0: {stderr}");
    let plot = out.join(format!("{name}.svg"));
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "the plot draws lines: {}", plot.display());
    report
}

/// The loss check of a scenario that writes: it held the replicas to acknowledged writes
/// and found nothing missing.
fn nothing_lost(report: &Value) {
    assert!(figure(report, "writes_acknowledged") > 0.0, "acknowledged writes were checked: {report:#}");
    assert_eq!(figure(report, "events_lost"), 0.0, "{report:#}");
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name].as_f64().unwrap_or_else(|| panic!("figure {name} in {report:#}"))
}

#[test]
fn customer_down_checkouts_succeed_with_the_replica_and_fail_with_the_synchronous_address() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("customer-down", out.path());
    assert_eq!(figure(&report, "success_ratio_sync"), 0.0);
    assert!(figure(&report, "success_ratio_replica") >= 0.99, "{report:#}");
    assert!(figure(&report, "stale_answers") > 0.0, "the replica answered during the outage");
    assert!(figure(&report, "convergence_s") >= 0.0);
    nothing_lost(&report);
}

#[test]
fn broker_down_writes_are_accepted_outboxes_grow_and_nothing_is_lost() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("broker-down", out.path());
    assert!(figure(&report, "writes_accepted") > 0.0);
    assert!(figure(&report, "max_outbox_backlog") > 0.0);
    assert!(figure(&report, "convergence_s") >= 0.0);
    nothing_lost(&report);
}

#[test]
fn broker_down_with_an_order_event_deleted_from_the_outbox_reports_it_lost_and_fails() {
    let out = tempfile::tempdir().unwrap();
    let (output, report) = run_scenario("broker-down", out.path(), &["--drop-event"]);
    assert!(!output.status.success(), "a scenario that lost an event exits non-zero: {report:#}");
    assert_eq!(report["passed"], false, "{report:#}");
    assert!(figure(&report, "events_lost") >= 1.0, "{report:#}");
    assert!(figure(&report, "lost_events") >= 1.0, "the gap in the order stream is counted: {report:#}");
    assert!(figure(&report, "lost_writes") >= 1.0, "the acknowledged order is missing: {report:#}");
    let key = report["figures"]["dropped_key"].as_str().expect("the report names the dropped event's key");
    let examples = report["figures"]["lost_examples"].as_array().expect("examples of what is lost");
    assert!(
        examples.iter().filter_map(Value::as_str).any(|e| e.contains(key)),
        "the dropped order {key} is listed by key: {report:#}"
    );
    let failed: Vec<&Value> =
        report["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(failed.len(), 1, "only the loss check fails: {report:#}");
    assert!(failed[0]["check"].as_str().unwrap().starts_with("no event is lost"), "{report:#}");
}

#[test]
fn a_dropped_event_is_refused_by_scenarios_that_cannot_drop_one() {
    let out = tempfile::tempdir().unwrap();
    let refused = capshop()
        .args(["scenario", "breaker", "--quick", "--drop-event", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--drop-event works with broker-down only"), "{stderr}");
}

#[test]
fn stale_address_is_shown_overridden_held_and_then_shipped() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("stale-address", out.path());
    assert_eq!(report["figures"]["checkout_shows_old_address"], true);
    assert_eq!(report["figures"]["override_used"], true);
    assert_eq!(report["figures"]["shipment_held"], true);
    nothing_lost(&report);
}

#[test]
fn poison_event_is_retried_dead_lettered_and_replayed_after_the_fix() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("poison-event", out.path());
    assert_eq!(figure(&report, "attempts"), 3.0);
    assert_eq!(figure(&report, "dead_letters"), 1.0);
    assert_eq!(figure(&report, "replayed"), 1.0);
    assert_eq!(report["figures"]["attempt_times_ms"].as_array().map(Vec::len), Some(3));
    nothing_lost(&report);
}

#[test]
fn read_your_writes_shows_the_new_address_to_every_checkout_with_the_token() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("read-your-writes", out.path());
    assert_eq!(figure(&report, "with_token_new_address_ratio"), 1.0);
    assert!(report["figures"]["without_token_new_address_ratio"].is_number());
    nothing_lost(&report);
}

#[test]
fn inventory_partition_cp_refuses_and_never_oversells_while_ap_sells_on_both_sites_and_compensates() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("inventory-partition", out.path());
    assert_eq!(figure(&report, "cp_oversold"), 0.0);
    for site in ["dc1", "dc2"] {
        assert!(figure(&report, &format!("refused_unreachable_{site}_cp")) > 0.0, "{site} refused in cp");
        assert_eq!(figure(&report, &format!("accepted_{site}_cp")), 0.0, "{site} took nothing in cp");
        assert!(figure(&report, &format!("accepted_{site}_ap")) > 0.0, "{site} sold in ap");
    }
    let reason = report["figures"]["cp_refusal_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot reach"), "the refusal says why: {reason}");
    assert!(figure(&report, "oversold_units_ap") > 0.0, "ap oversold during the partition");
    assert_eq!(figure(&report, "compensated_orders_ap"), figure(&report, "oversold_units_ap"));
    assert_eq!(figure(&report, "ap_oversold_unshipped_after_compensation"), 0.0);
    assert_eq!(figure(&report, "oversold_shipped_ap"), 0.0);
    assert_eq!(figure(&report, "divergence_after_heal_ap"), 0.0);
    assert_eq!(figure(&report, "divergence_after_heal_cp"), 0.0);
    nothing_lost(&report);
}

#[test]
fn breaker_opens_on_a_slow_catalog_degrades_checkouts_and_closes_after_recovery() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("breaker", out.path());
    assert!(figure(&report, "degraded_open_answers") > 0.0);
    assert!(report["figures"]["degraded_open_p50_ms"].is_number(), "their latency is reported");
    assert_eq!(figure(&report, "success_ratio"), 1.0);
    assert_eq!(figure(&report, "events_lost"), 0.0);
}

#[test]
fn cache_down_degrades_popular_products_to_limited_and_nothing_else_fails() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("cache-down", out.path());
    assert_eq!(figure(&report, "limited_ratio"), 1.0);
    assert_eq!(figure(&report, "other_success_ratio"), 1.0);
    nothing_lost(&report);
}

#[test]
fn backup_the_consistent_cut_restores_without_damage_while_a_naive_copy_shows_it() {
    let out = tempfile::tempdir().unwrap();
    let report = scenario("backup", out.path());
    assert_eq!(figure(&report, "consistent_broken_links"), 0.0);
    assert_eq!(figure(&report, "consistent_orphans"), 0.0);
    assert_eq!(figure(&report, "consistent_defects"), 0.0);
    assert_eq!(figure(&report, "acknowledged_orders_missing"), 0.0);
    assert_eq!(figure(&report, "write_errors_during"), 0.0);
    let naive_damage =
        figure(&report, "naive_defects") > 0.0 || report["figures"]["naive_certificate_passed"] == false;
    assert!(naive_damage, "the naive copy shows damage: {report:#}");
    for name in ["pause_ms", "backup_s", "restore_s", "write_p99_ms_before", "write_p99_ms_during"] {
        assert!(report["figures"][name].is_number(), "{name} is reported");
    }
    nothing_lost(&report);
}

#[test]
fn db_failover_loses_no_acknowledged_order_with_a_synchronous_standby_and_lists_what_async_lost() {
    let postgres = kit::testserver::POSTGRES_INSTALL;
    if kit::testserver::binary("pg_basebackup", postgres).is_none()
        || kit::testserver::binary("initdb", postgres).is_none()
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = passing("db-failover", out.path());
    assert_eq!(figure(&report, "sync_lost_writes"), 0.0, "{report:#}");
    let lost = figure(&report, "async_lost_writes");
    let listed = report["figures"]["async_lost_orders"].as_array().expect("the lost orders by key");
    assert_eq!(listed.len() as f64, lost, "every lost order is listed: {report:#}");
    assert!(listed.iter().all(|id| id.as_str().is_some_and(|id| id.starts_with("o-"))), "{report:#}");
    assert!(figure(&report, "recovery_s") > 0.0);
    for name in ["checkout_errors", "write_p99_ms_async", "write_p99_ms_sync"] {
        assert!(figure(&report, name) >= 0.0, "{name}: {report:#}");
    }
    assert!(
        figure(&report, "sync_acknowledged_orders") > 0.0
            && figure(&report, "async_acknowledged_orders") > 0.0
    );
}

#[test]
fn the_list_names_every_scenario_and_an_unknown_name_is_refused_with_the_list() {
    let listed = capshop().args(["scenario", "--list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let names = [
        "customer-down",
        "broker-down",
        "stale-address",
        "poison-event",
        "read-your-writes",
        "inventory-partition",
        "breaker",
        "cache-down",
        "backup",
        "db-failover",
    ];
    for name in names {
        assert!(listed.lines().any(|l| l.starts_with(name)), "{name} in {listed}");
    }
    let unknown = capshop().args(["scenario", "meteor-strike"]).output().unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no scenario \"meteor-strike\"") && stderr.contains("customer-down"), "{stderr}");
}
