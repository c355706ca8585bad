//! The bounded inbox: which event ids a consumer's dedup still needs, and pruning the rest.
//!
//! Every event of a subscribed stream passes the inbox in the transaction of its effects
//! (written by [`crate::consumer`]). Per consumer and stream the *floor*
//! (`kit_inbox_floor`) is a seq at or below which every event has been applied, so any
//! later copy of one is a duplicate by its position alone, whatever the bus redelivers (a
//! lost ack, a republish after the NATS duplicate window). An event right above the floor
//! moves it, in the same transaction, and leaves no other trace; only an event above a gap
//! is recorded by id (`kit_inbox`, with its stream, seq and the time it was applied). The
//! floor advances over the contiguous run of recorded seqs above it, and jumps to just
//! below the bus's [`Bus::retained_from`], under which every consumer has settled
//! everything. A retrying or dead event is a gap that holds the floor below it
//! until it is applied. Rows at or below the floor are deleted once they are older than
//! [`InboxRetention::keep_for`], in small transactions of their own.
//!
//! The floor is also the consumer's contiguous applied position: [`crate::lag`] measures
//! lag from it, so an earlier event still retrying or dead keeps the lag above zero.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::bus::{Bus, BusError};
use crate::clock;
use crate::envelope::Envelope;
use crate::store::{Store, StoreError, Tx};

/// How long applied event ids are kept once the floor has passed them, and how they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRetention {
    /// Rows at or below the floor are kept this long after they were applied.
    pub keep_for: Duration,
    /// The least time between two prunes of one consumer.
    pub every: Duration,
    /// Rows deleted per transaction.
    pub batch: u64,
}

impl Default for InboxRetention {
    /// Kept for an hour, pruned at most every 10 s, 5,000 rows per transaction.
    fn default() -> Self {
        Self { keep_for: Duration::from_secs(3600), every: Duration::from_secs(10), batch: 5000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("cannot prune the inbox: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read the bus's retention: {0}")]
    Bus(#[from] BusError),
}

/// Rows read per step while walking the applied seqs above a floor.
const WALK: u64 = 10_000;

/// The floors of one consumer's streams inside one batch transaction.
///
/// An event right above its stream's floor (the common case: the bus delivers a stream in
/// order) is recognised as new by its position alone and leaves no inbox row; the floor
/// moves past it, and is written once per stream at the end of the batch. Only an event
/// that arrives above a gap (an earlier one still retrying, dead, or delivered later) is
/// recorded by id, and the floor moves over it once the gap is filled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Floors {
    by_stream: HashMap<String, Floor>,
}

#[derive(Debug, Clone, Copy)]
struct Floor {
    stored: u64,
    /// As this batch moved it so far.
    moved: u64,
    /// Whether events above the floor are recorded by id: only then can an event right
    /// above the floor be a copy of one recorded while it was above a gap.
    recorded_above: bool,
}

/// How an event passes the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Passage {
    /// A copy of an applied event: skipped.
    Duplicate,
    /// Right above the floor: applied without a row; [`Floors::applied`] moves the floor.
    Next,
    /// Above a gap: recorded by id.
    Recorded,
}

impl Floors {
    /// Reads the stored floors of the streams `events` come from, and locks them until the
    /// batch commits: instances of one service that apply batches of the same consumer at
    /// once then take turns, so none decides "new by position" on a floor another is
    /// moving (which could apply an event twice, or leave the floor behind). Locked in
    /// stream order, so two batches never wait for each other.
    pub(crate) fn load<'a>(
        tx: &mut Tx<'_>,
        consumer: &str,
        streams: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, StoreError> {
        let mut by_stream = HashMap::new();
        for stream in streams.into_iter().collect::<std::collections::BTreeSet<_>>() {
            let stored: u64 = tx
                .query_one(
                    "INSERT INTO kit_inbox_floor (consumer, stream, seq) VALUES ($1, $2, 0) \
                     ON CONFLICT (consumer, stream) DO UPDATE SET seq = kit_inbox_floor.seq \
                     RETURNING seq",
                    &[consumer.into(), stream.into()],
                )?
                .get(0)?;
            let recorded_above = tx
                .query_opt(
                    "SELECT 1 FROM kit_inbox WHERE consumer = $1 AND stream = $2 AND seq > $3 LIMIT 1",
                    &[consumer.into(), stream.into(), stored.into()],
                )?
                .is_some();
            by_stream.insert(stream.to_owned(), Floor { stored, moved: stored, recorded_above });
        }
        Ok(Self { by_stream })
    }

    /// Lets `event` pass the inbox: a duplicate by position or id, the next by position, or
    /// recorded by id (in the transaction of its effects).
    pub(crate) fn pass(
        &mut self,
        tx: &mut Tx<'_>,
        consumer: &str,
        event: &Envelope,
        now_ms: u64,
    ) -> Result<Passage, StoreError> {
        // A stream the batch did not load has no known floor: its events go by id.
        let Some(floor) = self.by_stream.get_mut(event.stream.as_str()) else {
            return record_by_id(tx, consumer, event, now_ms);
        };
        if event.seq <= floor.moved {
            return Ok(Passage::Duplicate);
        }
        if event.seq == floor.moved + 1 {
            // A copy of one recorded by id while it was above a gap is still a duplicate.
            let recorded = floor.recorded_above
                && tx
                    .query_opt(
                        "SELECT 1 FROM kit_inbox WHERE consumer = $1 AND event_id = $2",
                        &[consumer.into(), event.id.to_string().as_str().into()],
                    )?
                    .is_some();
            return Ok(if recorded { Passage::Duplicate } else { Passage::Next });
        }
        floor.recorded_above = true;
        record_by_id(tx, consumer, event, now_ms)
    }

    /// Moves the floor past an event that passed as [`Passage::Next`] and was applied.
    pub(crate) fn applied(&mut self, event: &Envelope) {
        if let Some(floor) = self.by_stream.get_mut(event.stream.as_str())
            && event.seq == floor.moved + 1
        {
            floor.moved = event.seq;
        }
    }

    /// Writes the floors this batch moved, each carried on over the events recorded by id
    /// right above it.
    pub(crate) fn save(&self, tx: &mut Tx<'_>, consumer: &str) -> Result<(), StoreError> {
        for (stream, floor) in &self.by_stream {
            if floor.moved == floor.stored {
                continue;
            }
            let floor = if floor.recorded_above {
                contiguous(tx, consumer, stream, floor.moved)?
            } else {
                floor.moved
            };
            tx.execute(
                "INSERT INTO kit_inbox_floor (consumer, stream, seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (consumer, stream) DO UPDATE SET seq = excluded.seq \
                 WHERE excluded.seq > kit_inbox_floor.seq",
                &[consumer.into(), stream.as_str().into(), floor.into()],
            )?;
        }
        Ok(())
    }
}

/// Records `event` in the inbox by its id: [`Passage::Duplicate`] when it is there already.
fn record_by_id(
    tx: &mut Tx<'_>,
    consumer: &str,
    event: &Envelope,
    now_ms: u64,
) -> Result<Passage, StoreError> {
    let fresh = tx.execute(
        "INSERT INTO kit_inbox (consumer, event_id, stream, seq, applied_at_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
        &[
            consumer.into(),
            event.id.to_string().as_str().into(),
            event.stream.as_str().into(),
            event.seq.into(),
            now_ms.into(),
        ],
    )? == 1;
    Ok(if fresh { Passage::Recorded } else { Passage::Duplicate })
}

/// The seq at or below which every event of `stream` has been applied by `consumer`,
/// starting from at least `settled` (the bus's retained seq minus one).
pub(crate) fn contiguous(
    tx: &mut Tx<'_>,
    consumer: &str,
    stream: &str,
    settled: u64,
) -> Result<u64, StoreError> {
    let recorded: u64 = tx
        .query_opt(
            "SELECT seq FROM kit_inbox_floor WHERE consumer = $1 AND stream = $2",
            &[consumer.into(), stream.into()],
        )?
        .map_or(Ok(0), |r| r.get(0))?;
    let mut floor = recorded.max(settled);
    loop {
        let seqs = tx.query(
            "SELECT seq FROM kit_inbox WHERE consumer = $1 AND stream = $2 AND seq > $3 ORDER BY seq LIMIT $4",
            &[consumer.into(), stream.into(), floor.into(), WALK.into()],
        )?;
        let read = seqs.len() as u64;
        for row in seqs {
            let seq: u64 = row.get(0)?;
            if seq != floor + 1 {
                return Ok(floor);
            }
            floor = seq;
        }
        if read < WALK {
            return Ok(floor);
        }
    }
}

/// Advances the floors of `consumer` on `streams` and deletes the rows at or below them
/// that are older than the retention; returns how many rows went.
pub async fn prune(
    store: &Store,
    bus: &dyn Bus,
    consumer: &str,
    streams: &[String],
    retention: &InboxRetention,
) -> Result<u64, InboxError> {
    let mut deleted = 0;
    for stream in streams {
        let settled = bus.retained_from(stream).await?.saturating_sub(1);
        let (name, stream_name) = (consumer.to_owned(), stream.clone());
        let floor = store
            .transact(move |tx| {
                let floor = contiguous(tx, &name, &stream_name, settled)?;
                tx.execute(
                    "INSERT INTO kit_inbox_floor (consumer, stream, seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer, stream) DO UPDATE SET seq = excluded.seq \
                     WHERE excluded.seq > kit_inbox_floor.seq",
                    &[name.as_str().into(), stream_name.as_str().into(), floor.into()],
                )?;
                Ok::<_, StoreError>(floor)
            })
            .await?;
        let before = clock::now_ms().saturating_sub(retention.keep_for.as_millis() as u64);
        loop {
            let (name, stream_name, batch) = (consumer.to_owned(), stream.clone(), retention.batch);
            let n = store
                .transact(move |tx| {
                    let lowest: Option<u64> = tx
                        .query_one(
                            "SELECT min(seq) FROM kit_inbox WHERE consumer = $1 AND stream = $2",
                            &[name.as_str().into(), stream_name.as_str().into()],
                        )?
                        .get(0)?;
                    let Some(lowest) = lowest.filter(|lowest| *lowest <= floor) else { return Ok(None) };
                    // Seqs are dense, so a batch lies within `batch` seqs of the lowest: the
                    // scan stays that short however many rows the retention keeps.
                    let last = floor.min(lowest + batch.max(1) - 1);
                    let n = tx.execute(
                        "DELETE FROM kit_inbox WHERE consumer = $1 AND stream = $2 AND seq >= $3 AND seq <= $4 \
                         AND applied_at_ms <= $5",
                        &[
                            name.as_str().into(),
                            stream_name.as_str().into(),
                            lowest.into(),
                            last.into(),
                            before.into(),
                        ],
                    )?;
                    Ok::<_, StoreError>(Some(n as u64))
                })
                .await?;
            // Nothing at or below the floor, or the lowest ids are still within their retention.
            let Some(n) = n.filter(|n| *n > 0) else { break };
            deleted += n;
            tokio::task::yield_now().await;
        }
    }
    if deleted > 0 {
        debug!(consumer, deleted, "pruned the inbox");
    }
    Ok(deleted)
}

/// Prunes one consumer's inbox beside it: woken after the consumer applied a batch, at most
/// once per [`InboxRetention::every`] (no timer, so paused-time tests keep their clock).
pub(crate) struct Pruner {
    applied: Arc<Notify>,
}

impl Pruner {
    pub(crate) fn new() -> Self {
        Self { applied: Arc::new(Notify::new()) }
    }

    /// Tells the pruner that a batch was applied.
    pub(crate) fn applied(&self) {
        self.applied.notify_one();
    }

    /// Prunes after applied batches, forever (the caller stops it with its consumer).
    pub(crate) async fn run(
        &self,
        store: Store,
        bus: Arc<dyn Bus>,
        consumer: String,
        streams: Vec<String>,
        retention: InboxRetention,
    ) {
        let mut last = 0;
        loop {
            self.applied.notified().await;
            let now = clock::now_ms();
            if now.saturating_sub(last) < retention.every.as_millis() as u64 {
                continue;
            }
            last = now;
            if let Err(e) = prune(&store, bus.as_ref(), &consumer, &streams, &retention).await {
                warn!(consumer = %consumer, error = %e, "pruning the inbox failed; the next batch tries again");
            }
        }
    }
}

#[cfg(test)]
mod tests;
