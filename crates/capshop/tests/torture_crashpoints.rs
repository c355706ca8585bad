//! The nemesis's crash points against the canary `outbox-outside-txn` (the outbox row
//! written in a transaction of its own after the business write commits): every schedule
//! begins with a crash right after a commit, where that row is still only in memory, so
//! each schedule in which the point fired lost an event and must fail.

#[allow(dead_code, reason = "the relay canary's helper is for the other torture tests")]
mod torturing;

use serde_json::Value;
use torturing::{rule, torture};

/// The crash points the nemesis reached in one schedule, from its history.
fn reached(schedule: &Value) -> Vec<String> {
    let history = std::fs::read_to_string(schedule["history"].as_str().unwrap()).unwrap();
    history
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|op| op["client"] == "nemesis" && op["op"] == "crash-point-reached")
        .map(|op| op["key"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_crash_right_after_a_commit_catches_an_outbox_row_written_outside_the_transaction() {
    let out = tempfile::tempdir().unwrap();
    let args = ["--seed", "31", "--schedules", "2", "--settle-seconds", "10"];
    let (report, exited_ok) = torture(&args, Some("outbox-outside-txn"), out.path());
    assert_eq!(report["canary"]["name"], "outbox-outside-txn");
    let mut fired = 0;
    for schedule in report["per_schedule"].as_array().unwrap() {
        assert!(
            schedule["faults"]["crash-point"].as_u64() >= Some(1),
            "a crash point is planned: {schedule}"
        );
        if !reached(schedule).iter().any(|point| point == "outbox.after_commit") {
            continue;
        }
        fired += 1;
        assert_eq!(schedule["passed"], false, "seed {}: the lost event went unseen", schedule["seed"]);
        let convergence = schedule["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"].as_str().unwrap().starts_with("4 "));
        assert!(convergence.unwrap()["violations"].as_u64() > Some(0), "a liveness failure: {schedule}");
    }
    assert!(fired > 0, "no schedule reached outbox.after_commit: {report:#}");
    assert!(!exited_ok && report["passed"] == false, "{report:#}");
    assert!(rule(&report, "4 ")["violations"].as_u64() >= Some(fired), "{report:#}");
}

/// Without a canary, the same crashes (and every other crash point the plans draw) lose
/// nothing: the schedules pass.
#[test]
fn a_correct_shop_crashed_at_its_crash_points_passes() {
    let out = tempfile::tempdir().unwrap();
    let (report, exited_ok) = torture(&["--seed", "31", "--schedules", "2"], None, out.path());
    let fired: Vec<String> = report["per_schedule"].as_array().unwrap().iter().flat_map(reached).collect();
    assert!(fired.iter().any(|point| point == "outbox.after_commit"), "{fired:?}: {report:#}");
    assert!(exited_ok && report["passed"] == true, "{report:#}");
}
