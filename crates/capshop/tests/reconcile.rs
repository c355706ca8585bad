//! `capshop reconcile` as an operator runs it: against a running `capshop up` through its
//! gateway, then against the data dir the shop left; exit 0 without a defect, 1 with one,
//! 2 when there is nothing to read.

mod running;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use running::up;

fn reconcile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
        .arg("reconcile")
        .args(args)
        .env_remove("CAPSHOP_ADMIN_TOKEN")
        .output()
        .expect("capshop reconcile runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn reconcile_exits_0_on_a_settled_shop_and_1_once_a_database_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let shop = up(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let live = ["--url", shop.url.as_str(), "--token", token.trim(), "--json"];
    // The seed replicates after start; until it has, its events are in flight (exit 0 too,
    // since in-flight findings are not defects), so wait for a report with no finding at all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let output = reconcile(&live);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        if report["findings"].as_array().is_some_and(Vec::is_empty) {
            break report;
        }
        assert!(Instant::now() < deadline, "the seed never settled: {report}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["source"], "cut", "a running embedded shop is read at one cut");
    assert_eq!((report["broken_links"].as_u64(), report["orphans"].as_u64()), (Some(0), Some(0)));
    drop(shop);

    let data_dir = dir.path().to_str().unwrap();
    let clean = reconcile(&["--data-dir", data_dir]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(text(&clean).contains("every relation between the services agrees"), "{}", text(&clean));

    let search = rusqlite::Connection::open(dir.path().join("search.db")).unwrap();
    let lost =
        search.execute("DELETE FROM search_document WHERE kind = 'product' AND id = 'p-001'", []).unwrap();
    assert_eq!(lost, 1);
    drop(search);
    let damaged = reconcile(&["--data-dir", data_dir]);
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    assert!(
        text(&damaged).contains("replica_missing") && text(&damaged).contains("key=p-001"),
        "{}",
        text(&damaged)
    );
    let json = reconcile(&["--backup", data_dir, "--json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["replica_mismatches"], 1, "{report}");
    assert_eq!(report["findings"][0]["class"], "defect", "{report}");

    // A placement counted twice: search's bestsellers hold more units than the orders.
    let search = rusqlite::Connection::open(dir.path().join("search.db")).unwrap();
    let units: i64 = search
        .query_row(
            "SELECT coalesce(sum(units), 0) FROM search_units_ordered WHERE product_id = 'p-001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    search
        .execute(
            "INSERT INTO search_units_ordered (product_id, units) VALUES ('p-001', ?1) \
             ON CONFLICT (product_id) DO UPDATE SET units = excluded.units",
            [units + 1],
        )
        .unwrap();
    drop(search);
    let json = reconcile(&["--data-dir", data_dir, "--json"]);
    assert_eq!(json.status.code(), Some(1), "{}", text(&json));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["counters"], 1, "{report}");
    let counted = report["findings"].as_array().unwrap().iter().find(|f| f["kind"] == "units_ordered_differ");
    let counted = counted.unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        (&counted["class"], &counted["keys"]["product"]),
        (&"defect".into(), &"p-001".into()),
        "{report}"
    );
    let detail = format!("search counts {} units of p-001 ordered, the orders hold {units}", units + 1);
    assert_eq!(counted["detail"], detail.as_str(), "{report}");
}

#[test]
fn reconcile_of_a_directory_without_a_shop_says_what_to_point_it_at() {
    let empty = tempfile::tempdir().unwrap();
    let output = reconcile(&["--data-dir", empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("holds no"), "{}", text(&output));
    let nothing = reconcile(&[]);
    assert_eq!(nothing.status.code(), Some(2), "clap refuses a call without a source: {}", text(&nothing));
    assert!(text(&nothing).contains("--url"), "{}", text(&nothing));
}
