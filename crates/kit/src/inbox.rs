//! The bounded inbox: which event ids a consumer's dedup still needs, and pruning the rest.
//!
//! Every event of a subscribed stream passes the inbox (`kit_inbox`, written by
//! [`crate::consumer`] in the transaction of its effects) with its stream, seq and the time
//! it was applied. Per consumer and stream the *floor* (`kit_inbox_floor`) is a seq at or
//! below which every event has been applied, so any later copy of one is a duplicate by
//! its position alone, whatever the bus redelivers (a lost ack, a republish after the NATS
//! duplicate window). The floor advances over the contiguous run of applied seqs above it,
//! and jumps to just below the bus's [`Bus::retained_from`], under which every consumer
//! has settled everything. A retrying or dead event is a gap that holds the floor below it
//! until it is applied. Rows at or below the floor are deleted once they are older than
//! [`InboxRetention::keep_for`], in small transactions of their own.
//!
//! The floor is also the consumer's contiguous applied position: [`crate::lag`] measures
//! lag from it, so an earlier event still retrying or dead keeps the lag above zero.

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

/// Records `event` in `consumer`'s inbox; returns `false` for a duplicate: an id already
/// there, or a seq at or below the floor.
pub(crate) fn record(
    tx: &mut Tx<'_>,
    consumer: &str,
    event: &Envelope,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let stream = event.stream.as_str();
    let fresh = tx.execute(
        "INSERT INTO kit_inbox (consumer, event_id, stream, seq, applied_at_ms) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
        &[
            consumer.into(),
            event.id.to_string().as_str().into(),
            stream.into(),
            event.seq.into(),
            now_ms.into(),
        ],
    )? == 1;
    if !fresh {
        return Ok(false);
    }
    let below_floor = tx
        .query_opt(
            "SELECT 1 FROM kit_inbox_floor WHERE consumer = $1 AND stream = $2 AND seq >= $3",
            &[consumer.into(), stream.into(), event.seq.into()],
        )?
        .is_some();
    if below_floor {
        // A copy of an event whose id was pruned: it leaves no row to prune again.
        tx.execute(
            "DELETE FROM kit_inbox WHERE consumer = $1 AND event_id = $2",
            &[consumer.into(), event.id.to_string().as_str().into()],
        )?;
    }
    Ok(!below_floor)
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
