//! How far a consumer is behind its sources: per source stream, the position it has
//! applied, the position the source has published, and the age of the newest applied event.
//!
//! Lag counts from the *contiguous* applied position (every seq at or below it applied, see
//! [`crate::inbox`]), not from the highest: an unordered consumer may have applied later
//! events while an earlier one is still retrying or dead, and its lag is not zero then.

use crate::bus::{Bus, BusError};
use crate::clock;
use crate::inbox;
use crate::store::{Store, StoreError, Tx};

/// One consumer's position on one source stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamLag {
    pub stream: String,
    /// The highest seq of this stream the consumer has applied.
    pub applied_seq: u64,
    /// The seq at or below which the consumer has applied every event of this stream; below
    /// `applied_seq` while an earlier event is retrying or dead.
    pub contiguous_seq: u64,
    /// The highest seq the source has published on the bus.
    pub published_seq: u64,
    /// Milliseconds since the newest applied event occurred (`None` before the first).
    pub newest_applied_age_ms: Option<u64>,
}

impl StreamLag {
    /// Events published past the contiguous applied position: zero only when every
    /// published event has been applied.
    pub fn events_behind(&self) -> u64 {
        self.published_seq.saturating_sub(self.contiguous_seq)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("cannot read applied positions: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read published positions: {0}")]
    Bus(#[from] BusError),
}

/// Measures `consumer`'s lag on each of `streams`.
pub async fn measure(
    store: &Store,
    bus: &dyn Bus,
    consumer: &str,
    streams: &[String],
) -> Result<Vec<StreamLag>, LagError> {
    let mut settled = Vec::with_capacity(streams.len());
    for stream in streams {
        settled.push(bus.retained_from(stream).await?.saturating_sub(1));
    }
    let applied = {
        let (consumer, streams) = (consumer.to_owned(), streams.to_vec());
        store.transact(move |tx| applied_positions(tx, &consumer, &streams, &settled)).await?
    };
    let now = clock::now_ms();
    let mut lags = Vec::with_capacity(streams.len());
    for (stream, (applied_seq, contiguous_seq, occurred_at_ms)) in streams.iter().zip(applied) {
        lags.push(StreamLag {
            stream: stream.clone(),
            applied_seq,
            contiguous_seq,
            published_seq: bus.stream_head(stream).await?,
            newest_applied_age_ms: occurred_at_ms.map(|at| now.saturating_sub(at)),
        });
    }
    Ok(lags)
}

/// Per stream, the highest and the contiguous applied seq, and when the newest applied
/// event occurred; `settled` is, per stream, the seq below which the bus keeps nothing.
fn applied_positions(
    tx: &mut Tx<'_>,
    consumer: &str,
    streams: &[String],
    settled: &[u64],
) -> Result<Vec<(u64, u64, Option<u64>)>, StoreError> {
    streams
        .iter()
        .zip(settled)
        .map(|(stream, &settled)| {
            let row = tx.query_opt(
                "SELECT seq, occurred_at_ms FROM kit_applied WHERE consumer = $1 AND stream = $2",
                &[consumer.into(), stream.into()],
            )?;
            let (applied, occurred) = match row {
                Some(row) => (row.get(0)?, Some(row.get(1)?)),
                None => (0, None),
            };
            let contiguous = inbox::contiguous(tx, consumer, stream, settled)?;
            Ok((applied.max(contiguous), contiguous, occurred))
        })
        .collect()
}
