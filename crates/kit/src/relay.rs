//! The relay: moves committed outbox events to the bus in `seq` order, in batches, at
//! least once.
//!
//! It is woken by the outbox after every commit, so the fast path has no polling delay.
//! An event is marked relayed only after the bus has it durably; a crash in between
//! publishes it again, and the bus drops the copy by event id. While the bus is
//! unreachable the relay backs off and the outbox grows; writers never wait for it.

use std::future::Future;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::bus::{Bus, BusError, Message};
use crate::crashpoint;
use crate::outbox::{self, Outbox};
use crate::store::{Store, StoreError};

/// Events published per bus call: large enough to amortize a round trip, small enough
/// to keep one transaction short.
pub const DEFAULT_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read the outbox: {0}")]
    Store(#[from] StoreError),
    #[error("cannot publish: {0}")]
    Bus(#[from] BusError),
}

/// Moves one outbox stream to the bus.
pub struct Relay {
    store: Store,
    outbox: Outbox,
    bus: Arc<dyn Bus>,
    batch: usize,
    backoff: Backoff,
    relayed: Counter,
}

impl Relay {
    pub fn new(store: Store, outbox: Outbox, bus: Arc<dyn Bus>) -> Self {
        Self {
            store,
            outbox,
            bus,
            batch: DEFAULT_BATCH,
            backoff: Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(1)),
            relayed: Counter::default(),
        }
    }

    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Counts published events into `counter` (e.g. [`crate::metrics::KitMetrics::relayed_counter`]).
    pub fn counter(mut self, counter: Counter) -> Self {
        self.relayed = counter;
        self
    }

    /// Events this relay has published since it started.
    pub fn relayed(&self) -> u64 {
        self.relayed.get()
    }

    /// Relays until `shutdown` completes, draining what is committed before it waits.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let committed = self.outbox.committed();
        let mut failures = 0;
        loop {
            // Registered before reading, so a commit during the read is not missed.
            let notified = committed.notified();
            match self.relay_batch().await {
                Ok(n) if n == self.batch => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    tokio::select! {
                        _ = notified => {}
                        _ = &mut shutdown => return,
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.backoff.delay(failures);
                    warn!(stream = %self.outbox.stream(), error = %e, retry_in_ms = delay.as_millis() as u64, "relay failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut shutdown => return,
                    }
                }
            }
        }
    }

    /// Publishes the next batch of committed events and marks them relayed; returns how
    /// many it moved.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let stream = self.outbox.stream().to_string();
        let limit = self.batch;
        let pending = {
            let stream = stream.clone();
            self.store.transact(move |tx| outbox::read_pending(tx, &stream, limit)).await?
        };
        let Some(last) = pending.last().map(|p| p.seq) else { return Ok(0) };
        #[allow(unused_mut, reason = "only the canary changes the batch")]
        let mut batch: Vec<Message> = pending
            .into_iter()
            .map(|p| Message { id: p.id, stream: stream.clone(), seq: p.seq, key: p.key, body: p.body })
            .collect();
        #[cfg(feature = "canary")]
        if crate::canary::armed("relay-skip") {
            batch.retain(|m| m.seq % 50 != 0);
        }
        crashpoint::reached("relay.before_publish");
        self.bus.publish(&batch).await?;
        crashpoint::reached("relay.after_publish");
        self.store.transact(move |tx| outbox::mark_relayed(tx, &stream, last)).await?;
        self.relayed.inc_by(batch.len() as u64);
        debug!(stream = %self.outbox.stream(), count = batch.len(), last, "relayed");
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests;
