//! Named points on the event path where a test process stops dead, so a crash test can
//! SIGKILL it at an exact boundary (after commit, after publish, after apply).
//!
//! `CAPSHOP_CRASHPOINT=NAME` (or `NAME:N`, the N-th time it is reached) arms one point.
//! When reached, the process prints `crashpoint NAME reached` on stdout and freezes the
//! calling thread; the test waits for that line and kills the process. Unarmed points cost
//! one comparison.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    nth: u64,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("CAPSHOP_CRASHPOINT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((name, nth)) => (name.to_owned(), nth.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Armed { name, nth, seen: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Freezes the process here if this point is armed and reached for the armed time.
pub fn reached(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name != name || armed.seen.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "crashpoint {name} reached");
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
