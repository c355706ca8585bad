//! The relay: moves committed outbox events to the bus in `seq` order, in batches, at
//! least once.
//!
//! It is woken by the outbox after every commit, so the fast path has no polling delay.
//! An event is marked relayed only after the bus has it durably; a crash in between
//! publishes it again, and the bus drops the copy by event id. While the bus is
//! unreachable the relay backs off and the outbox grows; writers never wait for it.
//!
//! Every instance of a service runs a relay per stream, and only the holder of the stream's
//! lease ([`lease`]) publishes; the others stand by and take over when it lapses. Commits
//! of other instances do not wake this one, so on a store that several processes share
//! (PostgreSQL) the holder also looks at the outbox every [`SHARED_POLL`].

pub mod lease;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::bus::{Bus, BusError, Message};
use crate::crashpoint;
use crate::outbox::{self, Outbox};
use crate::store::{Dialect, Store, StoreError};
use lease::Held;

/// Events published per bus call: large enough to amortize a round trip, small enough
/// to keep one transaction short.
pub const DEFAULT_BATCH: usize = 1000;

/// How often the lease holder looks for events that other instances committed, on a store
/// that several processes share.
pub const SHARED_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot read the outbox: {0}")]
    Store(#[from] StoreError),
    #[error("cannot publish: {0}")]
    Bus(#[from] BusError),
    #[error("the relay lease ran out before publishing")]
    LeaseRanOut,
}

/// What one step of the relay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It holds the lease and published this many events.
    Relayed(usize),
    /// Another instance holds the lease.
    Standby,
}

/// Moves one outbox stream to the bus.
pub struct Relay {
    store: Store,
    outbox: Outbox,
    bus: Arc<dyn Bus>,
    batch: usize,
    backoff: Backoff,
    relayed: Counter,
    /// Who this relay is in the lease: unique per process run (fixed on SQLite: [`default_holder`]).
    holder: String,
    ttl: Duration,
    /// How often the holder looks for commits it was not woken for; `None` when only this
    /// process writes the store.
    poll: Option<Duration>,
    held: Mutex<Option<Held>>,
}

/// Who a relay is in the lease unless named. One process owns a SQLite file, so its relay
/// is the file's only one: under a fixed name, a process restarted after a crash takes the
/// lease over at once instead of waiting out the dead run's. A PostgreSQL database may be
/// shared by several processes, so each run is a holder of its own there.
fn default_holder(dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => "the sole relay of this file".into(),
        Dialect::Postgres => format!("relay-{}", uuid::Uuid::now_v7()),
    }
}

impl Relay {
    pub fn new(store: Store, outbox: Outbox, bus: Arc<dyn Bus>) -> Self {
        Self {
            outbox,
            bus,
            batch: DEFAULT_BATCH,
            backoff: Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(1)),
            relayed: Counter::default(),
            holder: default_holder(store.dialect()),
            ttl: lease::DEFAULT_TTL,
            poll: (store.dialect() == Dialect::Postgres).then_some(SHARED_POLL),
            held: Mutex::new(None),
            store,
        }
    }

    /// Names this relay in the lease (e.g. `order@host-a`); a unique suffix is added, so two
    /// processes given the same name still never both hold it.
    pub fn holder(mut self, name: &str) -> Self {
        self.holder = format!("{name}/{}", uuid::Uuid::now_v7());
        self
    }

    /// How long a lease lasts unless renewed ([`lease::DEFAULT_TTL`]).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(100));
        self
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

    /// Relays until `shutdown` completes, draining what is committed before it waits; gives
    /// the lease up when it stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let committed = self.outbox.committed();
        let mut failures = 0;
        loop {
            // Registered before reading, so a commit during the read is not missed.
            let notified = committed.notified();
            let wait = match self.step().await {
                Ok(Step::Relayed(n)) if n == self.batch => {
                    failures = 0;
                    continue;
                }
                Ok(Step::Relayed(_)) => {
                    failures = 0;
                    self.poll
                }
                Ok(Step::Standby) => {
                    // Commits do not matter to a standby: only the lease's expiry does.
                    failures = 0;
                    tokio::select! {
                        _ = tokio::time::sleep(self.ttl / 5) => {}
                        _ = &mut shutdown => break,
                    }
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.backoff.delay(failures);
                    warn!(stream = %self.outbox.stream(), error = %e, retry_in_ms = delay.as_millis() as u64, "relay failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut shutdown => break,
                    }
                    continue;
                }
            };
            let looked = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = looked => {}
                _ = &mut shutdown => break,
            }
        }
        self.give_up().await;
    }

    /// Publishes the next batch of committed events and marks them relayed; returns how
    /// many it moved (0 also while another instance holds the lease).
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        Ok(match self.step().await? {
            Step::Relayed(n) => n,
            Step::Standby => 0,
        })
    }

    /// Whether this relay holds its stream's lease now (renewing it when due).
    pub async fn holds_lease(&self) -> Result<bool, StoreError> {
        Ok(self.renewed().await?.is_some())
    }

    /// The lease as held now, renewed (or taken) in the database when a third of it is used.
    async fn renewed(&self) -> Result<Option<Held>, StoreError> {
        let asked = Instant::now();
        let current = *self.held.lock().expect("lease lock");
        if let Some(held) = current
            && held.until.saturating_duration_since(asked) > self.ttl * 2 / 3
        {
            return Ok(Some(held));
        }
        let (stream, holder, ttl) = (self.outbox.stream().to_string(), self.holder.clone(), self.ttl);
        let held = self.store.transact(move |tx| lease::hold(tx, &stream, &holder, ttl, asked)).await?;
        let before = std::mem::replace(&mut *self.held.lock().expect("lease lock"), held);
        if before.map(|h| h.epoch) != held.map(|h| h.epoch) {
            match held {
                Some(held) => {
                    info!(stream = %self.outbox.stream(), holder = %self.holder, epoch = held.epoch, "took the relay lease")
                }
                None if before.is_some() => {
                    warn!(stream = %self.outbox.stream(), holder = %self.holder, "lost the relay lease")
                }
                None => {}
            }
        }
        Ok(held)
    }

    async fn step(&self) -> Result<Step, RelayError> {
        let Some(held) = self.renewed().await? else { return Ok(Step::Standby) };
        #[cfg(feature = "canary")]
        if crate::canary::armed("outbox-outside-txn") {
            let outbox = self.outbox.clone();
            self.store.transact(move |tx| outbox.write_deferred(tx)).await?;
        }
        let stream = self.outbox.stream().to_string();
        let limit = self.batch;
        let pending = {
            let stream = stream.clone();
            self.store.transact(move |tx| outbox::read_pending(tx, &stream, limit)).await?
        };
        let Some(last) = pending.last().map(|p| p.seq) else { return Ok(Step::Relayed(0)) };
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
        // Only while the lease is provably held: after it, another instance may be relaying.
        // (Not a timeout around the call: under a paused clock it would fire at once.)
        if Instant::now() >= held.until {
            return Err(RelayError::LeaseRanOut);
        }
        self.bus.publish(&batch).await?;
        crashpoint::reached("relay.after_publish");
        let holder = self.holder.clone();
        let marked = self
            .store
            .transact(move |tx| {
                let held = lease::is_held(tx, &stream, &holder, held.epoch)?;
                if held {
                    outbox::mark_relayed(tx, &stream, last)?;
                }
                Ok::<_, StoreError>(held)
            })
            .await?;
        if !marked {
            *self.held.lock().expect("lease lock") = None;
            warn!(stream = %self.outbox.stream(), holder = %self.holder, "lost the relay lease while publishing");
            return Ok(Step::Standby);
        }
        self.relayed.inc_by(batch.len() as u64);
        debug!(stream = %self.outbox.stream(), count = batch.len(), last, "relayed");
        Ok(Step::Relayed(batch.len()))
    }

    /// Hands the lease back, so another instance takes over without waiting for it to expire.
    async fn give_up(&self) {
        if self.held.lock().expect("lease lock").take().is_none() {
            return;
        }
        let (stream, holder) = (self.outbox.stream().to_string(), self.holder.clone());
        if let Err(e) = self.store.transact(move |tx| lease::give_up(tx, &stream, &holder)).await {
            warn!(stream = %self.outbox.stream(), error = %e, "could not give the relay lease up; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests;
