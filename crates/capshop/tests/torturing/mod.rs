//! Running `capshop torture` as the real binary, for the tests of both modes.

use std::process::Command;

use serde_json::Value;

/// Runs `capshop torture` with `args` (schedules of 8 s unless `args` name `--seconds`, and
/// `canary` armed); answers its JSON report and whether it exited 0.
pub fn torture(args: &[&str], canary: Option<&str>, out: &std::path::Path) -> (Value, bool) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_capshop"));
    command.args(["torture", "--json", "--out"]).arg(out).args(args);
    if !args.contains(&"--seconds") {
        command.args(["--seconds", "8"]);
    }
    match canary {
        Some(canary) => command.env("CAPSHOP_CANARY", canary),
        None => command.env_remove("CAPSHOP_CANARY"),
    };
    let output = command.output().expect("capshop runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("no JSON report ({e}): {text}\n{}", String::from_utf8_lossy(&output.stderr))
    });
    (report, output.status.success())
}

/// The totals of the rule whose name starts with `number` (e.g. `"4 "`).
pub fn rule<'a>(report: &'a Value, number: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"].as_str().unwrap().starts_with(number))
        .unwrap()
}

/// The relay canary drops the 50th event of each stream and every 50th after: the
/// consumers wait for it forever, so no schedule in which a stream got that far can settle
/// (a liveness failure, rule 4). Runs two schedules with `args` added; each whose clients
/// were told of 50 writes to the customer stream (addresses, registrations: an event each)
/// must be caught, and at least one must have got that far.
pub fn assert_a_relay_that_skips_events_is_caught(args: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let mut all = vec!["--seed", "21", "--schedules", "2", "--settle-seconds", "10"];
    all.extend(args);
    let (report, exited_ok) = torture(&all, Some("relay-skip"), out.path());
    assert_eq!(report["canary"]["name"], "relay-skip");
    let mut past_fifty = 0;
    for schedule in report["per_schedule"].as_array().unwrap() {
        let history = std::fs::read_to_string(schedule["history"].as_str().unwrap()).unwrap();
        let writes = history
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|op| op["outcome"] == "ok" && (op["op"] == "address" || op["op"] == "register"))
            .count();
        if writes >= 50 {
            past_fifty += 1;
            assert_eq!(schedule["passed"], false, "seed {}: {writes} writes, not caught", schedule["seed"]);
        }
    }
    assert!(
        past_fifty > 0,
        "no schedule got the customer stream to seq 50, so nothing was skipped: {report:#}"
    );
    assert!(!exited_ok && report["passed"] == false, "{report:#}");
    let liveness = rule(&report, "4 ")["violations"].as_u64().unwrap();
    assert!(liveness >= past_fifty, "a liveness failure in each: {report:#}");
}
