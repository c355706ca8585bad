//! Crash tests: a real `capshop lab pipeline` process is frozen at a boundary of the event
//! path, killed with SIGKILL, and run again in the same directory. Nothing committed may be
//! lost and nothing may be applied twice.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const EVENTS: u64 = 3000;

fn pipeline(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_capshop"));
    command
        .args(["lab", "pipeline", "--events", &EVENTS.to_string(), "--per-commit", "20", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Runs the pipeline until it reaches `crashpoint`, then kills it with SIGKILL.
fn run_until_killed(dir: &std::path::Path, crashpoint: &str) {
    let mut child = pipeline(dir).env("CAPSHOP_CRASHPOINT", crashpoint).spawn().expect("capshop starts");
    let stdout = child.stdout.take().unwrap();
    let (seen, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = seen.send(line);
        }
    });
    let name = crashpoint.split(':').next().unwrap();
    let marker = format!("crashpoint {name} reached");
    // The pipeline prints nothing else on stdout before its final report.
    match lines.recv_timeout(Duration::from_secs(120)) {
        Ok(line) if line == marker => {}
        Ok(line) => panic!("the run finished without reaching {crashpoint}: {line}"),
        Err(e) => panic!("no crashpoint {crashpoint} within two minutes: {e}"),
    }
    child.kill().expect("SIGKILL is delivered");
    child.wait().unwrap();
}

/// Runs the pipeline to the end and returns its report.
fn run_to_the_end(dir: &std::path::Path) -> Value {
    let output = pipeline(dir).output().expect("capshop runs");
    assert!(output.status.success(), "the resumed run failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(text.lines().last().expect("a report line")).expect("the report is json")
}

fn crash_and_resume(crashpoint: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    run_until_killed(dir.path(), crashpoint);
    let report = run_to_the_end(dir.path());
    assert!(report["produced_at_start"].as_u64().unwrap() > 0, "the crash came after some commits: {report}");
    assert!(report["applied_at_start"].as_u64().unwrap() < EVENTS, "the crash came before the end: {report}");
    assert_eq!(report["lost"], 0, "no committed event is lost: {report}");
    assert_eq!(report["applied_twice"], 0, "no event has two effects: {report}");
    assert_eq!((report["first"].as_u64(), report["last"].as_u64()), (Some(1), Some(EVENTS)));
    report
}

#[test]
fn a_crash_right_after_a_commit_before_its_caller_hears_of_it_loses_nothing() {
    crash_and_resume("outbox.after_commit:5");
}

#[test]
fn a_crash_after_commit_before_relay_loses_nothing() {
    crash_and_resume("relay.before_publish:5");
}

#[test]
fn a_crash_after_publish_before_the_outbox_is_marked_loses_nothing_and_duplicates_nothing() {
    crash_and_resume("relay.after_publish:5");
}

#[test]
fn a_crash_after_apply_before_ack_has_no_second_effect() {
    let report = crash_and_resume("consumer.after_apply:5");
    assert!(
        report["duplicates_skipped"].as_u64().unwrap() > 0,
        "the unacknowledged batch came back and the inbox skipped it: {report}"
    );
}
