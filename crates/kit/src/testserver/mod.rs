//! Real servers for tests (PostgreSQL, NATS, Redis): [`PgServer`], a PostgreSQL server of
//! the test's own, [`NatsServer`] and [`RedisServer`]. Compiled only for tests (the `test-support` feature);
//! what production also needs (finding a program, a free port) is in [`crate::servers`].
//!
//! A test that needs a server starts its own, on a free port with a temporary directory,
//! so it can also kill and restart it. When the binary is missing the test is skipped
//! with a loud notice naming the install command, except in CI (`CI=true`), where a
//! missing binary fails the run: CI never skips these tests.

mod nats;
mod postgres;
mod redis;

use std::path::PathBuf;

pub use crate::servers::{NATS_INSTALL, POSTGRES_INSTALL, REDIS_INSTALL};
pub use nats::NatsServer;
pub use postgres::PgServer;
pub use redis::RedisServer;

/// Whether this run is CI's (`CI` set to `true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The path of `name` on PATH. When it is missing: panics in CI, else prints a notice
/// that names `install` and returns `None`, so the caller returns early.
pub fn binary(name: &str, install: &str) -> Option<PathBuf> {
    let found = crate::servers::on_path(name);
    if found.is_none() {
        skip(&format!("`{name}` is not on PATH; install it with: {install}"));
    }
    found
}

/// Fails in CI; elsewhere prints a skip notice where the test harness does not capture it
/// (straight to the process's stderr), so a skipped test is seen, not just passed.
pub fn skip(notice: &str) {
    use std::io::Write;
    assert!(!in_ci(), "CI=true and {notice}");
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED: {notice}\n");
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    crate::servers::free_port().expect("a free loopback port")
}

/// The first line `program --version` prints, for error messages and version checks.
pub fn version(program: &std::path::Path) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}
