//! Named points on the event path where a test process stops dead, so a crash test can
//! SIGKILL it at an exact boundary (after commit, after publish, after apply).
//!
//! `CAPSHOP_CRASHPOINT=NAME` (or `NAME:N`, the N-th time it is reached) arms one point
//! from the start. `CAPSHOP_CRASHPOINT_FILE=PATH` arms one while the process runs instead:
//! once PATH exists, its text (`NAME` or `NAME:N`) arms that point, the passes counted from
//! then (`capshop torture` arms its child so when a fault begins). When reached, the
//! process prints `crashpoint NAME reached` on stdout and freezes the calling thread; the
//! test waits for that line and kills the process. Unarmed points cost one comparison
//! (and a look for PATH while it is named but absent).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    nth: u64,
    seen: AtomicU64,
}

impl Armed {
    fn parse(spec: &str) -> Self {
        let (name, nth) = match spec.split_once(':') {
            Some((name, nth)) => (name.to_owned(), nth.parse().unwrap_or(1)),
            None => (spec.to_owned(), 1),
        };
        Armed { name, nth, seen: AtomicU64::new(0) }
    }
}

/// Where the armed point comes from.
enum Source {
    Unarmed,
    Env(Armed),
    File { path: PathBuf, armed: OnceLock<Armed> },
}

fn armed() -> Option<&'static Armed> {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    let source = SOURCE.get_or_init(|| {
        if let Ok(spec) = std::env::var("CAPSHOP_CRASHPOINT") {
            return Source::Env(Armed::parse(&spec));
        }
        match std::env::var_os("CAPSHOP_CRASHPOINT_FILE") {
            Some(path) => Source::File { path: path.into(), armed: OnceLock::new() },
            None => Source::Unarmed,
        }
    });
    match source {
        Source::Unarmed => None,
        Source::Env(armed) => Some(armed),
        Source::File { path, armed } => match armed.get() {
            Some(armed) => Some(armed),
            None => {
                let spec = std::fs::read_to_string(path).ok()?;
                Some(armed.get_or_init(|| Armed::parse(spec.trim())))
            }
        },
    }
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
