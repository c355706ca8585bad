//! The pause a consistent cut takes (DESIGN §5): every piece of work that writes into more
//! than one database in a way a cut must not split — a consumer applying a batch in its
//! store and settling it with the bus, a placement writing the note that announces its
//! payment authorization (shop/src/order/place.rs says why that is enough) — runs inside a
//! [`Passage`]; [`Pause::hold`] waits until the passages under way have ended and keeps
//! new ones waiting until it is dropped. While it is held no database is half-way through
//! such a piece of work, so snapshots opened then agree with each other. Work that writes
//! one database only (an HTTP write, a relay, a fetch) goes on meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tokio::time::Instant;

/// One process's pause: cloned into everything that must stop at the cut.
#[derive(Clone, Default)]
pub struct Pause(Arc<RwLock<()>>);

/// A piece of cross-database work under way; the cut waits for it to end.
pub struct Passage(#[allow(dead_code)] OwnedRwLockReadGuard<()>);

/// The pause held: no new passage starts until it is dropped.
pub struct Held {
    _guard: OwnedRwLockWriteGuard<()>,
    /// How long it waited for the passages under way to end.
    pub waited: Duration,
    since: Instant,
}

impl Held {
    /// How long passages have been kept waiting so far.
    pub fn held_for(&self) -> Duration {
        self.since.elapsed()
    }
}

impl Pause {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a piece of cross-database work, waiting while the pause is held. A hold that
    /// is waiting goes first: new passages queue behind it, so it waits only for the ones
    /// already under way (tokio's lock is fair).
    pub async fn enter(&self) -> Passage {
        Passage(self.0.clone().read_owned().await)
    }

    /// Holds the pause once every passage under way has ended.
    pub async fn hold(&self) -> Held {
        let started = Instant::now();
        let guard = self.0.clone().write_owned().await;
        let since = Instant::now();
        Held { _guard: guard, waited: since - started, since }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_waits_for_the_passage_under_way_and_keeps_new_ones_waiting_until_dropped() {
        let pause = Pause::new();
        let under_way = pause.enter().await;
        let holding = tokio::spawn({
            let pause = pause.clone();
            async move { pause.hold().await }
        });
        tokio::task::yield_now().await;
        assert!(!holding.is_finished(), "the hold waits for the passage under way");
        let queued = tokio::spawn({
            let pause = pause.clone();
            async move { pause.enter().await }
        });
        tokio::task::yield_now().await;
        drop(under_way);
        let held = holding.await.unwrap();
        tokio::task::yield_now().await;
        assert!(!queued.is_finished(), "a passage asked for after the hold waits behind it");
        drop(held);
        queued.await.unwrap();
    }
}
