//! `capshop bench`, run as the real binary: `--quick --json` prints every figure of issue
//! 12 with a sane type and appends the run to the results log. No timing is asserted:
//! the test only keeps the bench from rotting.

use std::process::Command;

use serde_json::Value;

fn capshop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
}

const NUMBERS: [&str; 8] = [
    "ceiling_events_per_s",
    "pipeline_events_per_s",
    "checkout_errors_outage",
    "sync_design_error_ratio",
    "orders_per_s",
    "http_ceiling_rps",
    "convergence_s",
    "peak_rss_mb",
];
/// Runs `capshop bench --quick --json` with `flags`, logging into a temporary results dir;
/// answers the printed figures and that dir.
fn quick_bench(flags: &[&str]) -> (Value, tempfile::TempDir) {
    let results = tempfile::tempdir().unwrap();
    let output = capshop()
        .args(["bench", "--quick", "--json"])
        .args(flags)
        .arg("--results")
        .arg(results.path())
        .output()
        .expect("capshop runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the bench {flags:?} failed: {stderr}");
    let figures = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the bench printed no JSON ({e}): {stdout}\n{stderr}"));
    (figures, results)
}

const WITH_MAX: [&str; 2] = ["lag_ms_1k", "lag_ms_10k"];
const WITHOUT_MAX: [&str; 2] = ["checkout_ms_healthy", "checkout_ms_outage"];

#[test]
fn a_quick_bench_prints_every_figure_of_the_issue_and_appends_the_run_to_the_results() {
    let (figures, results) = quick_bench(&[]);
    let object = figures.as_object().expect("the figures are one JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = NUMBERS.iter().chain(&WITH_MAX).chain(&WITHOUT_MAX).copied().collect();
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "exactly the issue's keys");
    for key in NUMBERS {
        let value = figures[key].as_f64().unwrap_or_else(|| panic!("{key} is a number: {figures:#}"));
        assert!(value.is_finite() && value >= 0.0, "{key} is a finite, non-negative number: {value}");
    }
    assert!(figures["checkout_errors_outage"].is_u64(), "a count of errors is an integer");
    assert!(figures["sync_design_error_ratio"].as_f64().unwrap() <= 1.0, "a ratio is at most 1");
    for (key, fields) in WITH_MAX
        .map(|k| (k, &["p50", "p99", "max"][..]))
        .into_iter()
        .chain(WITHOUT_MAX.map(|k| (k, &["p50", "p99"][..])))
    {
        let spread = figures[key].as_object().unwrap_or_else(|| panic!("{key} is an object: {figures:#}"));
        assert_eq!(spread.len(), fields.len(), "{key} has exactly {fields:?}");
        let values: Vec<f64> = fields
            .iter()
            .map(|f| spread[*f].as_f64().unwrap_or_else(|| panic!("{key}.{f} is a number")))
            .collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{key}'s percentiles grow: {values:?}");
    }

    let logs: Vec<_> = std::fs::read_dir(results.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(logs.len(), 1, "one results file per date: {logs:?}");
    assert!(logs[0].extension().is_some_and(|e| e == "jsonl"), "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "the run is one line");
    let run: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(run["figures"], figures, "the log holds the printed figures");
    assert!(run["machine"]["nproc"].as_u64().is_some_and(|n| n > 0), "the machine's cores: {run:#}");
    assert_eq!(run["settings"]["quick"], true);
    assert_eq!(run["settings"]["bus"], "embedded");
    assert!(run.get("commit").is_some(), "the commit (null outside a git checkout)");
}

#[test]
fn a_quick_bench_on_nats_and_postgres_measures_their_pipeline_and_leaves_the_shop_figures_unmeasured() {
    use kit::testserver::{NATS_INSTALL, POSTGRES_INSTALL, binary};
    if binary("nats-server", NATS_INSTALL).is_none() || binary("initdb", POSTGRES_INSTALL).is_none() {
        return;
    }
    let (figures, results) = quick_bench(&["--bus", "nats", "--db", "postgres"]);
    for key in ["ceiling_events_per_s", "pipeline_events_per_s", "convergence_s"] {
        let value = figures[key].as_f64().unwrap_or_else(|| panic!("{key} is measured: {figures:#}"));
        assert!(value.is_finite() && value > 0.0, "{key}: {value}");
    }
    for key in WITH_MAX {
        assert!(figures[key]["p99"].as_f64().is_some(), "{key} is measured: {figures:#}");
    }
    for key in ["orders_per_s", "checkout_ms_healthy", "peak_rss_mb"] {
        assert!(figures[key].is_null(), "{key} is not measured in this mode, so it is null: {figures:#}");
    }
    let log = std::fs::read_dir(results.path()).unwrap().next().expect("a results file").unwrap().path();
    let run: Value = serde_json::from_str(std::fs::read_to_string(log).unwrap().trim()).unwrap();
    assert_eq!((&run["settings"]["bus"], &run["settings"]["db"]), (&"nats".into(), &"postgres".into()));
    let details = &run["details"];
    for key in
        ["ceiling_jetstream_publish_per_s", "ceiling_jetstream_consume_per_s", "ceiling_insert_rows_per_s"]
    {
        assert!(details[key].as_f64().is_some_and(|v| v > 0.0), "{key} in the details: {details:#}");
    }
}
