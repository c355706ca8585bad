//! Wall-clock milliseconds derived from `tokio::time`, so paused-time tests drive
//! durable timestamps (retry deadlines, ack deadlines) deterministically.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

static ORIGIN: OnceLock<(u64, std::time::Instant)> = OnceLock::new();

fn origin() -> (u64, std::time::Instant) {
    *ORIGIN.get_or_init(|| {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        (wall, std::time::Instant::now())
    })
}

/// Returns milliseconds since the Unix epoch as seen by `tokio::time`.
///
/// Call it on the async side and pass the value into database closures: the database
/// threads are outside the runtime and would see real time under a paused clock.
pub fn now_ms() -> u64 {
    let (wall, start) = origin();
    let now = Instant::now().into_std();
    wall + now.saturating_duration_since(start).as_millis() as u64
}

/// Converts a wall-clock millisecond deadline into a `tokio::time::Instant`.
pub fn instant_at(deadline_ms: u64) -> Instant {
    let now = now_ms();
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now))
}
