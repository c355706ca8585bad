//! `capshop backup` and `capshop restore` as an operator runs them: a backup of a running
//! `capshop up`, verified, restored into a fresh data dir that `capshop up` then runs and
//! `capshop reconcile` finds clean; a damaged backup and an occupied data dir are refused
//! with what to do.

mod running;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use running::up;

fn capshop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
        .args(args)
        .env_remove("CAPSHOP_ADMIN_TOKEN")
        .output()
        .expect("capshop runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits until `capshop reconcile --url` of the shop at `url` reports no finding at all.
fn settled(url: &str, token: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = capshop(&["reconcile", "--url", url, "--token", token, "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if output.status.code() == Some(0) && report["findings"].as_array().is_some_and(Vec::is_empty) {
            return report;
        }
        assert!(Instant::now() < deadline, "the shop never settled: {}", text(&output));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_backup_of_a_running_shop_verifies_restores_and_runs_clean() {
    let root = tempfile::tempdir().unwrap();
    let live_dir = root.path().join("live");
    let shop = up(&live_dir);
    let token = std::fs::read_to_string(live_dir.join("admin-token")).unwrap().trim().to_owned();
    settled(&shop.url, &token);

    let backup = root.path().join("backup");
    let created =
        capshop(&["backup", "create", path(&backup), "--url", &shop.url, "--token", &token, "--json"]);
    assert!(created.status.success(), "{}", text(&created));
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).expect("a JSON summary");
    assert_eq!((summary["kind"].as_str(), summary["certified"].as_bool()), (Some("consistent"), Some(true)));
    assert!(
        summary["pause_ms"].is_number()
            && summary["positions"]["streams"]["catalog"]["committed"].as_u64() > Some(0),
        "{summary}"
    );
    let again = capshop(&["backup", "create", path(&backup), "--url", &shop.url, "--token", &token]);
    assert!(!again.status.success() && text(&again).contains("not empty"), "{}", text(&again));
    drop(shop);

    let verified = capshop(&["backup", "verify", path(&backup)]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("every checksum matches"), "{}", text(&verified));

    let occupied = capshop(&["restore", path(&backup), "--data-dir", path(&live_dir)]);
    assert!(!occupied.status.success(), "a restore never writes into a shop: {}", text(&occupied));
    assert!(text(&occupied).contains("already holds a shop"), "{}", text(&occupied));

    let restored_dir = root.path().join("restored");
    let restored = capshop(&["restore", path(&backup), "--data-dir", path(&restored_dir)]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(text(&restored).contains("capshop up --data-dir"), "it says how to run it: {}", text(&restored));
    let shop = up(&restored_dir);
    let token = std::fs::read_to_string(restored_dir.join("admin-token")).unwrap().trim().to_owned();
    let report = settled(&shop.url, &token);
    assert_eq!(report["defects"], 0, "{report}");
}

#[test]
fn a_damaged_backup_is_refused_naming_the_file_and_a_stopped_shop_backs_up_from_its_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let live_dir = root.path().join("live");
    let shop = up(&live_dir);
    let token = std::fs::read_to_string(live_dir.join("admin-token")).unwrap().trim().to_owned();
    settled(&shop.url, &token);
    drop(shop);

    let backup = root.path().join("backup");
    let created = capshop(&["backup", "create", path(&backup), "--from", path(&live_dir)]);
    assert!(created.status.success(), "{}", text(&created));
    let file = backup.join("order.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let verified = capshop(&["backup", "verify", path(&backup)]);
    assert!(!verified.status.success());
    assert!(
        text(&verified).contains("order.db") && text(&verified).contains("restore another one"),
        "{}",
        text(&verified)
    );
    let target = root.path().join("restored");
    let refused = capshop(&["restore", path(&backup), "--data-dir", path(&target)]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(!target.exists(), "nothing was restored");

    let nothing = capshop(&["backup", "verify", path(root.path())]);
    assert!(text(&nothing).contains("holds no backup"), "{}", text(&nothing));
}
