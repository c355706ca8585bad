//! `capshop chaos` against a real `capshop up` process: the commands change the running
//! shop through its gateway, and bad commands say what to do.

mod running;

use std::path::Path;
use std::process::{Command, Output};

use running::{Up, up};

fn chaos(up: &Up, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capshop"))
        .arg("chaos")
        .args(args)
        .args(["--url", &up.url, "--data-dir"])
        .arg(dir)
        .env_remove("CAPSHOP_ADMIN_TOKEN")
        .output()
        .expect("capshop chaos runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name} in {stdout}"))
}

#[test]
fn capshop_chaos_cuts_slows_heals_stops_and_starts_the_running_shop() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());

    let (out, err) = text(&chaos(&up, dir.path(), &["cut", "order", "customer", "--oneway"]));
    assert!(line(&out, "order->customer").contains("cut order -> customer"), "{out}{err}");
    let (out, _) = text(&chaos(&up, dir.path(), &["latency", "order", "bus", "150"]));
    assert!(line(&out, "order->bus").contains("+150 ms"), "{out}");
    let (out, _) = text(&chaos(&up, dir.path(), &["loss", "catalog", "cache", "0.5"]));
    assert!(line(&out, "catalog->cache").contains("50% lost"), "{out}");
    let (out, _) = text(&chaos(&up, dir.path(), &["stop", "customer"]));
    assert!(line(&out, "customer ").contains("stopped"), "{out}");

    let (out, _) = text(&chaos(&up, dir.path(), &["heal"]));
    assert!(out.lines().filter(|l| l.contains("->")).all(|l| l.contains("healthy")), "{out}");
    assert!(line(&out, "customer ").contains("stopped"), "heal leaves services as they are: {out}");
    let (out, _) = text(&chaos(&up, dir.path(), &["start", "customer"]));
    assert!(line(&out, "customer ").contains("running"), "{out}");
    let status = chaos(&up, dir.path(), &["status"]);
    assert!(status.status.success());
}

#[test]
fn capshop_chaos_explains_a_bad_command_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let up = up(dir.path());
    let cases: [(&[&str], &str); 4] = [
        (&["cut", "customer", "payment"], "order->customer"),
        (&["stop", "warehouse"], "customer, catalog"),
        (&["loss", "order", "bus", "2"], "between 0 and 1"),
        (&["heal", "order"], "both ends"),
    ];
    for (args, hint) in cases {
        let output = chaos(&up, dir.path(), args);
        let (out, err) = text(&output);
        assert!(!output.status.success(), "{args:?}: {out}");
        assert!(err.contains(hint), "{args:?} explains itself with {hint:?}: {err}");
    }
    let (out, _) = text(&chaos(&up, dir.path(), &["status"]));
    assert!(out.lines().filter(|l| l.contains("->")).all(|l| l.contains("healthy")), "{out}");

    let elsewhere = tempfile::tempdir().unwrap();
    let output = chaos(&up, elsewhere.path(), &["status"]);
    assert!(text(&output).1.contains("no admin token"), "{}", text(&output).1);
}
