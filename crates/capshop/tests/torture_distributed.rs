//! `capshop torture --distributed` as the real binary, against `capshop up --distributed`
//! (a process per service on PostgreSQL and nats-server, supervised): a short run passes
//! every rule and heals every kind of fault its plan draws (a crash and a pause of a
//! service, of nats-server and of PostgreSQL, each kind of link fault and faults inside
//! the bus), and the relay canary is caught here too.

mod torturing;

use std::collections::BTreeSet;

use kit::servers::{NATS_INSTALL, POSTGRES_INSTALL};
use serde_json::Value;
use torturing::{rule, torture};

/// Whether the servers the distributed mode runs on are there (outside CI a test without
/// them is skipped, loudly).
fn servers() -> bool {
    kit::testserver::binary("nats-server", NATS_INSTALL).is_some()
        && kit::testserver::binary("postgres", POSTGRES_INSTALL).is_some()
}

/// What kind of fault a plan step is: a crash or pause of `nats`, `postgres` or `a
/// service`, or a kind of link fault.
fn kind(step: &Value) -> String {
    let fault = step["fault"].as_str().unwrap();
    match (fault, step["process"].as_str()) {
        (_, Some(process @ ("nats" | "postgres"))) => format!("{fault} {process}"),
        (_, Some(_)) => format!("{fault} a service"),
        ("cut", None) if step["oneway"] == true => "cut one way".to_owned(),
        _ => fault.to_owned(),
    }
}

/// Three schedules of 15 s from seed 5015, whose plans draw every kind of fault between
/// them (no three schedules of 10 s do, since the plan also draws faults inside the bus):
/// every rule holds, and each fault is applied and healed.
#[test]
fn a_short_distributed_run_passes_every_rule_and_heals_every_kind_of_fault_it_draws() {
    if !servers() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let args = ["--distributed", "--seed", "5015", "--schedules", "3", "--seconds", "15"];
    let (report, exited_ok) = torture(&args, None, out.path());
    assert!(exited_ok && report["passed"] == true, "{report:#}");
    assert_eq!((report["schedules"].as_u64(), report["distributed"].as_bool()), (Some(3), Some(true)));
    for number in ["1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 "] {
        let rule = rule(&report, number);
        assert_eq!(rule["violations"], 0, "{rule}");
        assert!(rule["checked"].as_u64().unwrap() > 0, "rule {number}checked something: {rule}");
    }
    let mut healed = BTreeSet::new();
    for schedule in report["per_schedule"].as_array().unwrap() {
        assert_eq!(schedule["distributed"], true);
        let history = std::fs::read_to_string(schedule["history"].as_str().unwrap()).unwrap();
        let nemesis: Vec<Value> = history
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|op| op["client"] == "nemesis")
            .collect();
        let steps = schedule["plan"]["steps"].as_array().unwrap();
        // Every step was applied and healed, each answering 200: a crashed process ran
        // again under a new pid and served, a paused one went on, a link was healed.
        for action in ["fault", "heal"] {
            let done: Vec<&Value> = nemesis.iter().filter(|op| op["op"] == action).collect();
            assert_eq!(done.len(), steps.len(), "every step's {action}: {nemesis:#?}");
            assert!(done.iter().all(|op| op["status"] == 200), "every {action} answered 200: {nemesis:#?}");
        }
        healed.extend(steps.iter().map(kind));
    }
    let every = [
        "crash a service",
        "pause a service",
        "crash nats",
        "pause nats",
        "crash postgres",
        "pause postgres",
        "cut",
        "cut one way",
        "latency",
        "loss",
        "bus",
    ];
    let missing: Vec<&str> = every.into_iter().filter(|k| !healed.contains(*k)).collect();
    assert!(missing.is_empty(), "no {missing:?} was drawn and healed: {healed:?}");
}

/// The relay canary's missing events stop a distributed shop settling too. The
/// distributed shop answers fewer calls a second than the embedded one (and far fewer on
/// a loaded machine: once only 141 calls answered ok in 12 s, no stream reached the 50th
/// event and the canary skipped nothing), so more clients for longer.
#[test]
fn a_relay_that_skips_events_is_caught_in_the_distributed_mode_too() {
    if servers() {
        let args = ["--distributed", "--clients", "10", "--seconds", "12"];
        torturing::assert_a_relay_that_skips_events_is_caught(&args);
    }
}

#[test]
fn without_the_servers_on_path_a_distributed_run_says_what_to_install_and_starts_nothing() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_capshop"))
        .args(["torture", "--distributed", "--schedules", "1", "--out"])
        .arg(out.path().join("runs"))
        .env("PATH", out.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`nats-server` is not on PATH") && stderr.contains(NATS_INSTALL), "{stderr}");
    assert!(!out.path().join("runs").exists(), "nothing was started nor written");
}
