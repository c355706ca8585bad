//! A consumer's attachment to the embedded log.
//!
//! Fresh deliveries (first attempts taken past the consumer's position) live in memory
//! only ([`Outstanding`]); acknowledging them moves the consumer's settled position, once
//! per call. A fresh delivery that fails, is released, or is acknowledged while an earlier
//! one is still out gets a row in `bus_pending`, and rows are settled there. An attachment
//! that was replaced (the consumer attached again) settles everything through the rows its
//! successor made of its fresh deliveries.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;

use super::changes::Seen;
use super::outstanding::Outstanding;
use super::take::{self, Replaced, Request, Taken};
use super::{EmbeddedBus, release_next, settle_row};
use crate::bus::{BusError, ConsumerSpec, Delivery, DeliveryTag, Disposition, Ordering, Subscription};
use crate::clock;
use crate::store::{StoreError, Tx};

pub(super) struct EmbeddedSubscription {
    bus: EmbeddedBus,
    spec: ConsumerSpec,
    /// The consumer's streams, sorted, so the scan statement's text is stable.
    streams: Vec<String>,
    seen: Seen,
    /// Counts the messages this attachment dead-letters because their ack waits ran out.
    exhausted: Counter,
    /// This attachment's generation; a newer attachment bumps the consumer's.
    generation: u64,
    outstanding: Outstanding,
    /// The consumer's taken position as this attachment last moved it.
    taken: u64,
    /// Set while a fetch transaction is out: still set at the next one, the last fetch was
    /// cancelled (or failed) and may have taken fresh deliveries past `taken` it never kept.
    taking: Option<u64>,
    /// Keys whose later messages this attachment parked behind a fresh delivery.
    parked_keys: HashSet<String>,
}

/// A delivery's tag and, when it is fresh, its key.
type Tagged = (u64, Option<String>);

/// What became of a delivery that was not acknowledged.
enum Failure {
    Retry {
        visible_at_ms: u64,
        error: String,
        max_attempts: u32,
    },
    Reject {
        error: String,
    },
    /// Given back without using an attempt.
    Release,
}

impl Failure {
    /// Gives a fresh delivery (at its first attempt) the row this failure calls for;
    /// returns the row's state.
    fn insert(
        &self,
        tx: &mut Tx<'_>,
        consumer: &str,
        pos: u64,
        key: &str,
        now: u64,
    ) -> Result<String, StoreError> {
        let (state, attempts, visible_at_ms, error, failed_at_ms) = match self {
            Failure::Retry { visible_at_ms, error, max_attempts } => {
                let state = if *max_attempts <= 1 { "dead" } else { "ready" };
                (state, 1u32, *visible_at_ms, Some(error.as_str()), Some(now))
            }
            Failure::Reject { error } => ("dead", 1, 0, Some(error.as_str()), Some(now)),
            // Due again at once, as the same attempt: the row counts none yet.
            Failure::Release => ("ready", 0, 0, None, None),
        };
        tx.execute(
            "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms, error, failed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                consumer.into(),
                pos.into(),
                key.into(),
                state.into(),
                attempts.into(),
                visible_at_ms.into(),
                error.into(),
                failed_at_ms.into(),
            ],
        )?;
        Ok(state.to_owned())
    }

    /// Changes the row a redelivered message has; returns its new state, or `None` when it
    /// was no longer pending.
    fn update(
        &self,
        tx: &mut Tx<'_>,
        consumer: &str,
        pos: u64,
        now: u64,
    ) -> Result<Option<String>, StoreError> {
        let row = match self {
            Failure::Retry { visible_at_ms, error, max_attempts } => tx.query_opt(
                "UPDATE bus_pending SET state = CASE WHEN attempts >= $3 THEN 'dead' ELSE 'ready' END, \
                 visible_at_ms = $4, error = $5, failed_at_ms = $6 \
                 WHERE consumer = $1 AND pos = $2 AND state = 'inflight' RETURNING state",
                &[
                    consumer.into(),
                    pos.into(),
                    (*max_attempts).into(),
                    (*visible_at_ms).into(),
                    error.as_str().into(),
                    now.into(),
                ],
            )?,
            Failure::Reject { error } => tx.query_opt(
                "UPDATE bus_pending SET state = 'dead', error = $3, failed_at_ms = $4 \
                 WHERE consumer = $1 AND pos = $2 AND state IN ('inflight', 'ready') RETURNING state",
                &[consumer.into(), pos.into(), error.as_str().into(), now.into()],
            )?,
            Failure::Release => tx.query_opt(
                "UPDATE bus_pending SET state = 'ready', visible_at_ms = 0, attempts = attempts - 1 \
                 WHERE consumer = $1 AND pos = $2 AND state = 'inflight' AND attempts > 0 RETURNING state",
                &[consumer.into(), pos.into()],
            )?,
        };
        row.map(|r| r.get::<String>(0)).transpose()
    }
}

impl EmbeddedSubscription {
    pub(super) fn new(
        bus: EmbeddedBus,
        spec: ConsumerSpec,
        streams: Vec<String>,
        attached: (u64, u64),
    ) -> Self {
        let seen = Seen::new(bus.changes.subscribe(), streams.clone());
        let (generation, taken) = attached;
        Self {
            bus,
            spec,
            streams,
            seen,
            exhausted: Counter::default(),
            generation,
            outstanding: Outstanding::default(),
            taken,
            taking: None,
            parked_keys: HashSet::new(),
        }
    }

    fn replaced(&self) -> BusError {
        BusError::Unavailable(format!(
            "this attachment of consumer {:?} was replaced by a newer one",
            self.spec.name
        ))
    }

    async fn take(&mut self, max: usize) -> Result<Taken, BusError> {
        let now_ms = clock::now_ms();
        let expired = self.outstanding.expired(now_ms);
        let expired_at: HashSet<u64> = expired.iter().map(|(pos, _)| *pos).collect();
        // Only a per-key consumer parks behind a key; an unordered one needs no copy of them.
        let mut busy_keys: HashSet<String> = match self.spec.ordering {
            Ordering::PerKey => self.outstanding.keys().map(str::to_owned).collect(),
            Ordering::Unordered => HashSet::new(),
        };
        for (_, key) in &expired {
            busy_keys.remove(key);
        }
        let request = Request {
            spec: self.spec.clone(),
            streams: self.streams.clone(),
            generation: self.generation,
            now_ms,
            max,
            expired,
            busy_keys,
            lowest_outstanding: self.outstanding.lowest_except(&expired_at),
            unreturned_after: self.taking.replace(self.taken),
        };
        let taken = self.bus.store.transact(move |tx| take::take(tx, &request)).await?;
        let taken = taken.map_err(|Replaced| self.replaced())?;
        self.taking = None;
        for pos in expired_at {
            self.forget(pos);
        }
        let deadline_ms = now_ms + self.spec.ack_wait.as_millis() as u64;
        for (pos, key) in &taken.fresh {
            self.outstanding.insert(*pos, key.clone(), deadline_ms);
        }
        self.parked_keys.extend(taken.parked.iter().cloned());
        self.taken = taken.taken;
        Ok(taken)
    }

    /// Each tag with its key when it is a fresh delivery of this attachment.
    fn tagged(&self, tags: &[DeliveryTag]) -> Vec<Tagged> {
        tags.iter().map(|tag| (tag.0, self.outstanding.key(tag.0).map(str::to_owned))).collect()
    }

    fn forget(&mut self, pos: u64) {
        if let Some(key) = self.outstanding.remove(pos) {
            self.parked_keys.remove(&key);
        }
    }

    /// After a settling transaction: `current` is false when this attachment turned out
    /// to be replaced, and then nothing of it is outstanding any more.
    fn settled(&mut self, tags: &[DeliveryTag], current: bool) {
        if current {
            tags.iter().for_each(|tag| self.forget(tag.0));
        } else {
            self.outstanding = Outstanding::default();
            self.parked_keys.clear();
        }
    }

    /// Settles one delivery that was not acknowledged, in one transaction: a fresh one
    /// gets a row, a row changes; returns the row's state (`None`: no longer pending).
    async fn fail(&mut self, tag: DeliveryTag, failure: Failure) -> Result<Option<String>, BusError> {
        let tagged = self.tagged(&[tag]).remove(0);
        let (name, generation, now) = (self.spec.name.clone(), self.generation, clock::now_ms());
        let (state, current) = self
            .bus
            .store
            .transact(move |tx| {
                let current = is_current(tx, &name, generation)?;
                let state = match tagged {
                    (pos, Some(key)) if current => Some(failure.insert(tx, &name, pos, &key, now)?),
                    (pos, _) => failure.update(tx, &name, pos, now)?,
                };
                Ok::<_, StoreError>((state, current))
            })
            .await?;
        self.settled(&[tag], current);
        self.bus.pending_changed();
        Ok(state)
    }
}

fn is_current(tx: &mut Tx<'_>, consumer: &str, generation: u64) -> Result<bool, StoreError> {
    let now: u64 =
        tx.query_one("SELECT generation FROM bus_consumer WHERE name = $1", &[consumer.into()])?.get(0)?;
    Ok(now == generation)
}

/// Acknowledges in one transaction: fresh deliveries move the settled position (those
/// acknowledged while an earlier one is still out get an `acked` row until it passes them);
/// rows are deleted. A per-key consumer's next parked message of each key becomes due.
struct Ack {
    name: String,
    generation: u64,
    per_key: bool,
    tagged: Vec<Tagged>,
    /// The settled position once the fresh deliveries among the tags are settled.
    settled: u64,
    parked_keys: HashSet<String>,
}

/// What an acknowledgement did: whether the attachment was current, and whether something
/// parked became due.
struct Acked {
    current: bool,
    released: bool,
}

impl Ack {
    fn run(self, tx: &mut Tx<'_>) -> Result<Acked, StoreError> {
        let name = self.name.as_str();
        let current = tx.execute(
            "UPDATE bus_consumer SET acked_pos = max(acked_pos, $2) WHERE name = $1 AND generation = $3",
            &[name.into(), self.settled.into(), self.generation.into()],
        )? == 1;
        let mut released = false;
        for (pos, key) in &self.tagged {
            match key {
                Some(key) if current => {
                    if *pos > self.settled {
                        tx.execute(
                            "INSERT INTO bus_pending (consumer, pos, key, state, attempts, visible_at_ms) \
                             VALUES ($1, $2, $3, 'acked', 1, 0)",
                            &[name.into(), (*pos).into(), key.as_str().into()],
                        )?;
                    }
                    if self.per_key && self.parked_keys.contains(key) {
                        release_next(tx, name, key)?;
                        released = true;
                    }
                }
                _ => {
                    if let (true, Some(key)) = (self.per_key, settle_row(tx, name, *pos)?) {
                        release_next(tx, name, &key)?;
                        released = true;
                    }
                }
            }
        }
        if current {
            // Rows of settled messages the settled position has now passed.
            tx.execute(
                "DELETE FROM bus_pending WHERE consumer = $1 AND pos <= $2 AND state = 'acked'",
                &[name.into(), self.settled.into()],
            )?;
        }
        Ok(Acked { current, released })
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn fetch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let max = max.max(1);
        loop {
            self.seen.mark();
            let taken = self.take(max).await?;
            self.exhausted.inc_by(taken.exhausted);
            if !taken.deliveries.is_empty() {
                return Ok(taken.deliveries);
            }
            if taken.more {
                continue;
            }
            let wake_at = [taken.next_due_ms, self.outstanding.next_deadline_ms()]
                .into_iter()
                .flatten()
                .min()
                .map(clock::instant_at);
            tokio::select! {
                changed = self.seen.changed() => {
                    if !changed {
                        return Err(BusError::Unavailable("the embedded bus was closed".into()));
                    }
                }
                _ = sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        if tags.is_empty() {
            return Ok(());
        }
        let tagged = self.tagged(tags);
        let fresh: HashSet<u64> =
            tagged.iter().filter(|(_, key)| key.is_some()).map(|(pos, _)| *pos).collect();
        // Only the keys this ack can release, not every key ever parked.
        let parked_keys: HashSet<String> = tagged
            .iter()
            .filter_map(|(_, key)| key.as_ref())
            .filter(|key| self.parked_keys.contains(*key))
            .cloned()
            .collect();
        let ack = Ack {
            name: self.spec.name.clone(),
            generation: self.generation,
            per_key: self.spec.ordering == Ordering::PerKey,
            tagged,
            settled: self.outstanding.lowest_except(&fresh).map_or(self.taken, |pos| pos - 1),
            parked_keys,
        };
        let acked = self.bus.store.transact(move |tx| ack.run(tx)).await?;
        self.settled(tags, acked.current);
        if acked.released {
            self.bus.pending_changed();
        }
        Ok(())
    }

    async fn retry(
        &mut self,
        tag: DeliveryTag,
        delay: Duration,
        error: &str,
    ) -> Result<Disposition, BusError> {
        let failure = Failure::Retry {
            visible_at_ms: clock::now_ms() + delay.as_millis() as u64,
            error: error.to_owned(),
            max_attempts: self.spec.max_attempts,
        };
        Ok(match self.fail(tag, failure).await?.as_deref() {
            Some("dead") => Disposition::DeadLettered,
            Some(_) => Disposition::Retrying,
            None => Disposition::NotPending,
        })
    }

    async fn reject(&mut self, tag: DeliveryTag, error: &str) -> Result<(), BusError> {
        self.fail(tag, Failure::Reject { error: error.to_owned() }).await?;
        Ok(())
    }

    fn count_exhausted(&mut self, counter: Counter) {
        self.exhausted = counter;
    }

    async fn release(&mut self, tags: &[DeliveryTag]) -> Result<(), BusError> {
        for tag in tags {
            self.fail(*tag, Failure::Release).await?;
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
