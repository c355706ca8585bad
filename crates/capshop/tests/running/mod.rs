//! A real `capshop up` process for the CLI tests, on a free port in a temp dir, killed
//! when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Up {
    child: Child,
    pub url: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `capshop up` in `dir` on a free port and waits until it says it is up.
pub fn up(dir: &Path) -> Up {
    let port = kit::testserver::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_capshop"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env_remove("CAPSHOP_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("capshop starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("capshop prints that it is up").unwrap();
    assert!(first.starts_with("capshop is up"), "{first}");
    std::thread::spawn(move || lines.for_each(drop));
    Up { child, url: format!("http://127.0.0.1:{port}") }
}
