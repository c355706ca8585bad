//! What changed on the log, so a waiting fetch wakes only when it may find something: a
//! publish counts per stream, and anything else that can make a delivery due (a release,
//! a replay, a discard, a retry) counts for every consumer.

use std::collections::HashMap;

use tokio::sync::watch;

/// Counters bumped by every change; a subscription compares them with what it last saw.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Pending deliveries changed (any consumer may have something due now).
    pending: u64,
    /// Publishes per stream.
    streams: HashMap<String, u64>,
    /// Messages published, over every stream.
    messages: u64,
}

impl Changes {
    pub(super) fn published<'a>(&mut self, streams: impl IntoIterator<Item = &'a str>) {
        for stream in streams {
            self.messages += 1;
            match self.streams.get_mut(stream) {
                Some(count) => *count += 1,
                None => {
                    self.streams.insert(stream.to_owned(), 1);
                }
            }
        }
    }

    pub(super) fn pending_changed(&mut self) {
        self.pending += 1;
    }

    pub(super) fn messages(&self) -> u64 {
        self.messages
    }
}

/// What one subscription last saw of its streams' counters.
pub(super) struct Seen {
    receiver: watch::Receiver<Changes>,
    streams: Vec<String>,
    counts: Vec<u64>,
    pending: u64,
}

impl Seen {
    pub(super) fn new(receiver: watch::Receiver<Changes>, streams: Vec<String>) -> Self {
        let counts = vec![0; streams.len()];
        let mut seen = Self { receiver, streams, counts, pending: 0 };
        seen.mark();
        seen
    }

    /// Remembers the counters as they are now: a fetch calls it before it looks at the log,
    /// so a change during the look wakes the next wait.
    pub(super) fn mark(&mut self) {
        let changes = self.receiver.borrow_and_update();
        self.pending = changes.pending;
        for (stream, count) in self.streams.iter().zip(self.counts.iter_mut()) {
            *count = changes.streams.get(stream).copied().unwrap_or(0);
        }
    }

    /// Waits until something changed that concerns these streams; `false` once the bus is
    /// gone.
    pub(super) async fn changed(&mut self) -> bool {
        loop {
            if self.receiver.changed().await.is_err() {
                return false;
            }
            let changes = self.receiver.borrow_and_update();
            let concerned = changes.pending != self.pending
                || self
                    .streams
                    .iter()
                    .zip(&self.counts)
                    .any(|(stream, count)| changes.streams.get(stream).copied().unwrap_or(0) != *count);
            if concerned {
                return true;
            }
        }
    }
}
