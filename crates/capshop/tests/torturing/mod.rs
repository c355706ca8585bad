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

/// The relay canary drops every 50th event: the consumers wait for it forever, so no
/// schedule can settle (a liveness failure, rule 4). Two schedules with `args` added must
/// both be caught.
pub fn assert_a_relay_that_skips_events_is_caught(args: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let mut all = vec!["--seed", "21", "--schedules", "2", "--settle-seconds", "10"];
    all.extend(args);
    let (report, exited_ok) = torture(&all, Some("relay-skip"), out.path());
    assert!(!exited_ok && report["passed"] == false, "{report:#}");
    assert_eq!(report["canary"]["name"], "relay-skip");
    assert_eq!(report["canary"]["caught"], 2, "{report:#}");
    assert!(
        rule(&report, "4 ")["violations"].as_u64().unwrap() >= 2,
        "a liveness failure in each: {report:#}"
    );
}
